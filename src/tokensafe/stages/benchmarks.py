"""Stage: score one run's model on utility benchmarks with lm-evaluation-harness (``utility_benchmarks``)."""

from __future__ import annotations

import json
import logging

import torch

from tokensafe.eval.utility import harness
from tokensafe.io import write_json, write_parquet

log = logging.getLogger("tokensafe")


def run_lm_eval(
    *,
    aligned: str,
    adapter: str | None,
    task_data: str | None,
    bench: dict,
    settings: dict,
    max_gen_toks: int,
    out: str,
    out_json: str,
    vllm_cfg: dict | None = None,
    threads: int = 1,
) -> None:
    """``out``: tidy rows (task, metric, filter, value, stderr, n_samples, num_fewshot) with the run's settings,
    the benchmark settings and the harness version as metadata; ``out_json``: the harness's own results without
    the fields that change between identical runs (``harness.VOLATILE_KEYS``)."""
    import lm_eval

    torch.set_num_threads(threads)
    tasks = harness.task_list(list(bench["tasks"]), data_file=task_data, max_gen_toks=max_gen_toks)
    lm = harness.build_lm(
        aligned=aligned,
        adapter=adapter,
        dtype=settings.get("dtype", "auto"),
        batch_size=bench.get("batch_size", 16),
        backend=bench.get("backend", "hf"),
        vllm_cfg=vllm_cfg,
    )
    effect = harness.check_adapter_applied(lm, adapter) if bench.get("backend", "hf") == "hf" else None
    if effect is not None:
        log.info("adapter applied: it moves the probe's logits by up to %.4g", effect)
    results = harness.evaluate(lm, tasks, bench, seed=int(settings["seed"]))
    rows = harness.tidy(results)
    meta = {
        "settings": settings,
        "benchmarks": bench,
        "lm_eval_version": lm_eval.__version__,
        "adapter": adapter,
        "adapter_logit_effect": effect,
    }
    write_parquet(rows, out, metadata=meta)
    write_json(json.loads(json.dumps(harness.stable_results(results), default=str)), out_json)
    for r in rows.itertuples():
        log.info("%s %s (%s): %.4f +- %.4f (n=%d)", r.task, r.metric, r.filter, r.value, r.stderr, r.n_samples)
