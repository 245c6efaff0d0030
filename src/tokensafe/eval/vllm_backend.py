"""Generation with vLLM (``generation.backend: vllm``), importable without vLLM installed.

vLLM pins its own torch build, so it lives in a separate environment (``envs/vllm.yaml``); this
module imports it only inside the functions that need it. Everything that can be decided without
vLLM (sampling settings, LoRA requests, output order) is plain Python and tested here.

Prompts are passed as text already rendered with the chat template, or as token id lists. Text
that already starts with the BOS token (Llama 3 templates write ``<|begin_of_text|>``) gets a second
BOS from vLLM's tokenizer; pass token ids (encoded with ``add_special_tokens=False``) to avoid it.

From a Snakemake script::

    texts = run_vllm(base_model, prompts, config["generation"], adapter_path=snakemake.input.adapter)
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any, Sequence

VLLM_MISSING = (
    "generation.backend=vllm needs vLLM, which lives in its own environment: run with "
    "--software-deployment-method conda (envs/vllm.yaml) or the slurm profile, "
    "or set generation.backend: transformers"
)


def vllm_available() -> bool:
    """True when ``import vllm`` would find the package (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise RuntimeError with the environment hint when vLLM is not installed."""
    if not vllm_available():
        raise RuntimeError(VLLM_MISSING)


def sampling_kwargs(gen_cfg: dict) -> dict:
    """Map our generation config to ``vllm.SamplingParams`` keyword arguments.

    Keys read: ``greedy`` (bool, default False), ``temperature`` (default 1.0), ``top_p`` (default
    1.0), ``max_new_tokens`` (required), ``repetition_penalty`` (default 1.0), ``seed`` (optional),
    ``stop`` (optional list of strings). Other keys (backend, batch size, template ...) are not
    sampling settings and are ignored. Greedy decoding is vLLM's ``temperature=0`` (top_p then 1).
    """
    if "max_new_tokens" not in gen_cfg:
        raise ValueError("generation: missing 'max_new_tokens'")
    max_new = gen_cfg["max_new_tokens"]
    if not isinstance(max_new, int) or isinstance(max_new, bool) or max_new < 1:
        raise ValueError(f"generation.max_new_tokens: expected a positive integer, found {max_new!r}")
    greedy = gen_cfg.get("greedy", False)
    if not isinstance(greedy, bool):
        raise ValueError(f"generation.greedy: expected true/false, found {greedy!r}")
    rep = float(gen_cfg.get("repetition_penalty", 1.0))
    if rep <= 0:
        raise ValueError(f"generation.repetition_penalty: expected > 0, found {rep}")
    kwargs: dict[str, Any] = {"n": 1, "max_tokens": max_new, "repetition_penalty": rep}
    if greedy:
        kwargs.update(temperature=0.0, top_p=1.0)
    else:
        temperature = float(gen_cfg.get("temperature", 1.0))
        top_p = float(gen_cfg.get("top_p", 1.0))
        if temperature <= 0:
            raise ValueError(f"generation.temperature: expected > 0 when sampling (greedy: false), found {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"generation.top_p: expected in (0, 1], found {top_p}")
        kwargs.update(temperature=temperature, top_p=top_p)
    if gen_cfg.get("seed") is not None:
        kwargs["seed"] = int(gen_cfg["seed"])
    if gen_cfg.get("stop"):
        stop = gen_cfg["stop"]
        kwargs["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return kwargs


def build_requests(prompts: Sequence[str | Sequence[int]], adapter: str | None, adapter_id: int = 1) -> list[dict]:
    """One request dict per prompt: ``{"prompt": text or ids, "lora": (name, int id, path) | None}``.

    vLLM identifies a LoRA adapter by a positive integer id; all requests of one run share it.
    """
    if len(prompts) == 0:
        raise ValueError("build_requests: expected at least one prompt, found none")
    if adapter is not None:
        if isinstance(adapter_id, bool) or not isinstance(adapter_id, int) or adapter_id < 1:
            raise ValueError(f"adapter_id: vLLM needs a positive integer, found {adapter_id!r}")
        lora = (f"adapter_{adapter_id}", adapter_id, str(adapter))
    else:
        lora = None
    requests = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            prompt: str | list[int] = p
        elif all(isinstance(t, int) for t in p) and len(p) > 0:
            prompt = [int(t) for t in p]
        else:
            raise ValueError(f"prompt {i}: expected text or a non-empty list of token ids, found {type(p).__name__}")
        requests.append({"prompt": prompt, "lora": lora})
    return requests


def _request_number(request_id: Any) -> int | None:
    m = re.search(r"(\d+)$", str(request_id))
    return int(m.group(1)) if m else None


def in_request_order(request_outputs: Sequence[Any]) -> list[Any]:
    """Sort by the trailing integer of ``request_id`` when every output has a distinct one."""
    numbers = [_request_number(getattr(o, "request_id", None)) for o in request_outputs]
    if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        return [o for _, o in sorted(zip(numbers, request_outputs), key=lambda t: t[0])]
    return list(request_outputs)


def collect_outputs(request_outputs: Sequence[Any]) -> list[str]:
    """First completion text of each ``RequestOutput``, in submission order.

    ``LLM.generate`` already returns submission order; when the ids (``"0"``, ``"1"``, ... or with
    a prefix) all end in distinct integers the outputs are sorted by them anyway, so a streamed or
    engine-level list comes back in order too. Otherwise the given order is kept.
    """
    texts = []
    request_outputs = in_request_order(request_outputs)
    for o in request_outputs:
        completions = getattr(o, "outputs", None)
        if not completions:
            raise ValueError(f"request {getattr(o, 'request_id', '?')}: vLLM returned no completion")
        texts.append(completions[0].text)
    return texts


def run_vllm(
    base_model: str,
    prompts: Sequence[str | Sequence[int]],
    gen_cfg: dict,
    adapter_path: str | None = None,
    tensor_parallel_size: int = 1,
    dtype: str = "bfloat16",
    max_lora_rank: int = 64,
) -> list[str]:
    """Generate one completion per prompt with one vLLM engine; LoRA applied per request when given."""
    require_vllm()
    from vllm import LLM, SamplingParams  # noqa: PLC0415 - lazy: vLLM is an optional environment
    from vllm.lora.request import LoRARequest  # noqa: PLC0415

    params = SamplingParams(**sampling_kwargs(gen_cfg))
    requests = build_requests(prompts, adapter_path)
    engine_kwargs: dict[str, Any] = {"model": base_model, "tensor_parallel_size": tensor_parallel_size, "dtype": dtype}
    if gen_cfg.get("seed") is not None:
        engine_kwargs["seed"] = int(gen_cfg["seed"])
    if adapter_path is not None:
        engine_kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
    llm = LLM(**engine_kwargs)
    inputs = [r["prompt"] if isinstance(r["prompt"], str) else {"prompt_token_ids": r["prompt"]} for r in requests]
    lora = [LoRARequest(*r["lora"]) if r["lora"] else None for r in requests] if adapter_path else None
    outputs = llm.generate(inputs, params, lora_request=lora)
    return collect_outputs(outputs)


def run_vllm_sets(
    base_model: str,
    sets: Sequence[tuple[Sequence[str | Sequence[int]], dict]],
    adapter_path: str | None = None,
    tensor_parallel_size: int = 1,
    dtype: str = "bfloat16",
    max_lora_rank: int = 64,
    logprobs: int | None = None,
) -> list[list[Any]]:
    """Several prompt sets, each with its own sampling settings, through ONE engine (one model load).

    Returns, per set, the first completion of each prompt: its text, or with ``logprobs`` the vLLM
    ``CompletionOutput`` itself (text, token ids and the top-``logprobs`` log-probabilities per step).
    """
    require_vllm()
    from vllm import LLM, SamplingParams  # noqa: PLC0415
    from vllm.lora.request import LoRARequest  # noqa: PLC0415

    engine_kwargs: dict[str, Any] = {"model": base_model, "tensor_parallel_size": tensor_parallel_size, "dtype": dtype}
    if adapter_path is not None:
        engine_kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
    llm = LLM(**engine_kwargs)
    inputs, params, sizes = [], [], []
    for prompts, cfg in sets:
        kw = sampling_kwargs(cfg)
        if logprobs:
            kw["logprobs"] = logprobs
        sp = SamplingParams(**kw)
        for r in build_requests(prompts, adapter_path):
            inputs.append(r["prompt"] if isinstance(r["prompt"], str) else {"prompt_token_ids": r["prompt"]})
            params.append(sp)
        sizes.append(len(prompts))
    lora = LoRARequest("adapter_1", 1, str(adapter_path)) if adapter_path else None
    outputs = llm.generate(inputs, params, lora_request=lora)
    flat = [o.outputs[0] for o in in_request_order(outputs)] if logprobs else collect_outputs(outputs)
    out, start = [], 0
    for n in sizes:
        out.append(flat[start : start + n])
        start += n
    return out
