"""Stage: the workflow's LLM-judge jobs (``judge.llm``) - the endpoint, the cache folder, then
:func:`tokensafe.stages.llm_judge_scores.run_win_rate` / ``run_rubrics`` - and the summary's LLM-judge table.

``judge.llm.server``:

* ``external``: the user's endpoint (``base_url``, ``model``, the key in ``api_key_env``): GPT-4o, a vLLM
  server they run, any OpenAI-compatible API;
* ``transformers`` / ``vllm``: the workflow serves the local folder ``judge_model`` (the world's judge stand-in
  for ``embedded``) with ``transformers serve`` (main environment) or vLLM's API server (the vLLM environment),
  shared by a local run's jobs (:mod:`tokensafe.eval.llm_judge.judge_server`), behind a per-run key that only this run's
  jobs can read.

The cache lives outside the job outputs, under ``cache_root/<judge id>``: the served model name for an
external judge, ``local-<hash>`` of a local folder's config, tokenizer and weight files (size and first MiB of
each weight file), so a retrained judge does not answer from its predecessor's cache. A killed job's rerun
asks only what is missing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tokensafe.eval.llm_judge.judge_server import judge_endpoint
from tokensafe.eval.llm_judge.pairwise import win_rate
from tokensafe.eval.statistics.stats import prompt_interval
from tokensafe.io import read_parquet
from tokensafe.stages.llm_judge_scores import (
    RUBRIC_COLUMNS,
    SUMMARY_COLUMNS,
    WIN_RATE_COLUMNS,
    run_rubrics,
    run_win_rate,
    summary_rows,
)

log = logging.getLogger("tokensafe")

ENDPOINT_KEYS = (
    "base_url",
    "model",
    "api_key_env",
    "concurrency",
    "max_retries",
    "timeout_s",
    "temperature",
    "max_tokens",
    "pairwise_template",
    "rubrics",
)
LOCAL_SETTINGS = ("dtype", "max_model_len", "kv_cache_gib", "device")
ID_COLUMNS = ["method", "poison_ratio", "seed"]
TABLE_COLUMNS = ID_COLUMNS + SUMMARY_COLUMNS


def local_judge_id(folder: str) -> str:
    """``local-<hash>`` of a model folder: its small files whole, each weight file by size and first MiB."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).iterdir()):
        if not f.is_file() or f.name == "tokensafe_model.json":
            continue
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            if f.suffix in (".safetensors", ".bin", ".pt", ".gguf"):
                h.update(str(f.stat().st_size).encode() + fh.read(1 << 20))
            else:
                h.update(fh.read())
    return f"local-{h.hexdigest()[:16]}"


def _llm_job(measure: str, *, llm: dict, judge_model: str | None, cache_root: str, server_log: str, run) -> None:
    cfg = {k: llm[k] for k in ENDPOINT_KEYS if k in llm}
    if llm["server"] == "external":
        cache = Path(cache_root) / re.sub(r"[^A-Za-z0-9._-]+", "_", str(cfg["model"]))
        run(cfg, str(cache))
        return
    kind = llm["server"]
    python = sys.executable if kind == "transformers" else os.environ.get("TOKENSAFE_VLLM_PYTHON")
    if not python:
        raise RuntimeError("judge.llm.server vllm: the vLLM interpreter is not set (TOKENSAFE_VLLM_PYTHON)")
    settings = {k: llm["local"][k] for k in LOCAL_SETTINGS if k in llm.get("local", {})}
    with judge_endpoint(kind, judge_model, python, server_log, settings) as (base_url, name, key_file):
        log.info("LLM judge (%s): %s served by %s at %s", measure, judge_model, kind, base_url)
        cfg.update(base_url=base_url, model=name, api_key_env=None, api_key_file=key_file)
        run(cfg, str(Path(cache_root) / local_judge_id(judge_model)))


def judge_job(
    *,
    measure: str,
    generations: str,
    out: str,
    llm: dict,
    judge_model: str | None,
    cache_root: str,
    server_log: str,
    reference_generations: str | None = None,
) -> None:
    """One run's win rate against the reference run (``measure`` win_rate) or its rubric scores (rubrics)."""
    limit = llm.get("limit")
    if measure == "win_rate":

        def run(cfg, cache):
            run_win_rate(
                generations=generations,
                reference_generations=reference_generations,
                judge_cfg=cfg,
                cache_dir=cache,
                out=out,
                reference_run=llm["reference"],
                limit=limit,
            )
    elif measure == "rubrics":

        def run(cfg, cache):
            run_rubrics(generations=generations, judge_cfg=cfg, cache_dir=cache, out=out, limit=limit)
    else:
        raise ValueError(f"unknown LLM-judge measure {measure!r}")
    _llm_job(measure, llm=llm, judge_model=judge_model, cache_root=cache_root, server_log=server_log, run=run)


# -- the summary's LLM-judge table -------------------------------------------------------------------------------


def _pooled(frames: list[pd.DataFrame], value: str) -> np.ndarray:
    """Per prompt, the mean over seeds of ``value`` (NaN = invalid, left out) -> the valid prompts' means."""
    wide = pd.concat([f.set_index("prompt_id")[value].rename(i) for i, f in enumerate(frames)], axis=1)
    return wide.mean(axis=1, skipna=True).dropna().to_numpy(dtype=float)


def llm_table(runs: list[dict], reference: str) -> pd.DataFrame:
    """Rows per run (``seed`` as in the run) and per (method, poison_ratio) over seeds (``seed`` -1): win rate
    vs the reference per set and ``_avg`` (the reference's own rows: 50, n 0), rubric scores. ``runs``: dicts
    with method, poison_ratio, seed and the paths ``llm_win_rate`` / ``llm_rubrics`` (None where not asked)."""
    rows: list[dict] = []
    per_cell: dict = {}
    metric = f"win_rate_vs_{reference}"
    for r in runs:
        ids = {k: r[k] for k in ID_COLUMNS}
        part = summary_rows(win_rate_file=r.get("llm_win_rate"), rubrics_file=r.get("llm_rubrics"))
        rows += [{**ids, **row} for row in part.to_dict("records")]
        if r.get("llm_win_rate_skipped"):  # the reference does not run at this ratio and seed
            rows.append({**ids, "metric": f"{metric}_skipped", "set": "all"})
        cell = per_cell.setdefault((r["method"], float(r["poison_ratio"])), {"win": [], "rubrics": []})
        if r.get("llm_win_rate"):
            cell["win"].append(read_parquet(r["llm_win_rate"], WIN_RATE_COLUMNS))
        if r.get("llm_rubrics"):
            cell["rubrics"].append(read_parquet(r["llm_rubrics"], RUBRIC_COLUMNS))
    for (method, ratio), cell in sorted(per_cell.items()):
        ids = {"method": method, "poison_ratio": ratio, "seed": -1}
        rates = []
        sets = sorted({s for f in cell["win"] for s in f["set"]})
        for s in sets:
            frames = [f[f["set"] == s] for f in cell["win"]]
            scores = _pooled(frames, "score")
            r = win_rate(scores)
            r["n_invalid"] = int(sum(f.score.isna().sum() for f in frames))
            r["n_identical"] = int(sum(f.identical.sum() for f in frames))
            rates.append(r["win_rate"])
            rows.append({**ids, "metric": metric, "set": s, "value": r["win_rate"], **r})
        if sets:
            rows.append({**ids, "metric": f"{metric}_avg", "set": "all", "value": float(np.mean(rates))})
        if cell["rubrics"]:
            df = pd.concat(cell["rubrics"], ignore_index=True)
            for (name, s), _ in df.groupby(["rubric", "set"], sort=True):
                frames = [f[(f.rubric == name) & (f["set"] == s)] for f in cell["rubrics"]]
                base = {**ids, "set": s, "n_identical": 0}
                base["n_invalid"] = int(sum((~f.valid).sum() for f in frames))
                measures = [("score", "score")] + ([("harmfulness_rate", "is5")] if name.startswith("hexphi") else [])
                for label, col in measures:
                    fr = [f.assign(is5=np.where(f.valid, 100.0 * (f.score == 5), math.nan)) for f in frames]
                    vals = _pooled(fr, col)
                    lo, hi = prompt_interval(vals[None, :]) if vals.size else (math.nan, math.nan)
                    v = float(vals.mean()) if vals.size else math.nan
                    rows.append(
                        {
                            **base,
                            "metric": f"{name}_{label}",
                            "value": v,
                            "n": int(vals.size),
                            "ci_low": lo,
                            "ci_high": hi,
                        }
                    )
    ref_cells = sorted({(r["method"], float(r["poison_ratio"]), r["seed"]) for r in runs if r["method"] == reference})
    sets = sorted({row["set"] for row in rows if row["metric"] == metric})
    for method, ratio, seed in ref_cells + sorted({(m, p, -1) for m, p, _ in ref_cells}):
        for s in sets:
            rows.append(
                {
                    "method": method,
                    "poison_ratio": ratio,
                    "seed": seed,
                    "metric": metric,
                    "set": s,
                    "value": 50.0,
                    "n": 0,
                    "n_invalid": 0,
                    "n_identical": 0,
                }
            )
        if sets:
            rows.append(
                {
                    "method": method,
                    "poison_ratio": ratio,
                    "seed": seed,
                    "metric": f"{metric}_avg",
                    "set": "all",
                    "value": 50.0,
                }
            )
    out = pd.DataFrame(rows, columns=TABLE_COLUMNS + ["win_rate"])[TABLE_COLUMNS]
    return out.sort_values(ID_COLUMNS + ["metric", "set"], kind="stable").reset_index(drop=True)


def summary_columns(table: pd.DataFrame, method: str, ratio: float, seed: int) -> dict:
    """One run's wide summary columns: ``<metric>_<set>`` (``<metric>`` for the win rate's avg and the
    harmful-set rubric scores) and ``<metric>_n_invalid`` (summed over sets)."""
    t = table[(table.method == method) & (table.poison_ratio == float(ratio)) & (table.seed == int(seed))]
    out = {}
    for m, g in t.groupby("metric", sort=False):
        if m.endswith("_skipped"):
            continue
        if m.startswith("win_rate") and not m.endswith("_avg"):
            out.update({f"{m}_{s}": v for s, v in zip(g["set"], g.value)})
            out[f"{m}_n_invalid"] = int(g.n_invalid.fillna(0).sum())
        else:
            out[m] = float(g.value.mean()) if len(g) == 1 else float("nan")
            if not m.endswith("_avg") and not m.endswith("harmfulness_rate"):
                out[f"{m.rsplit('_', 1)[0]}_n_invalid"] = int(g.n_invalid.fillna(0).sum())
    return out
