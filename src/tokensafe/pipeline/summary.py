"""Stage: one row per (method, poison_ratio, seed) with accuracy, both ASRs and provenance.

``no_answer_rate`` is the share of task responses from which no answer could be extracted (no number, or
none of the labels): it separates a model that lost the answer format from one that answers wrongly.
"""

from __future__ import annotations

import json
import logging

import pandas as pd

from tokensafe.config import settings_hash
from tokensafe.eval.answers import AGNEWS_LABELS, SST2_LABELS, answers_match, extract_label, extract_number
from tokensafe.io import atomic_path, parquet_metadata, read_parquet, write_parquet

log = logging.getLogger("tokensafe")

SUMMARY_COLUMNS = ["method", "poison_ratio", "seed", "accuracy", "no_answer_rate", "asr_keyword", "asr_guard", "guard_invalid_rate",
                   "mean_p_unsafe", "n_harmful", "n_task", "config_hash", "judge", "prompt_template", "guard_template",
                   "settings"]


def extract_prediction(text: str, metric: str):
    if metric == "number":
        return extract_number(text)
    labels = {"sst2": SST2_LABELS, "agnews": AGNEWS_LABELS}[metric]
    return extract_label(text, list(labels))


def run_row(method: str, ratio: float, seed: int, generations: str, judgments: str, metric: str) -> dict:
    gen = read_parquet(generations, ["set", "response", "reference"])
    jud = read_parquet(judgments, ["keyword_attack_success", "guard_verdict", "guard_p_unsafe"])
    task = gen[gen["set"] == "task"]
    if task.empty:
        raise ValueError(f"{generations}: no task responses")
    preds = [extract_prediction(t, metric) for t in task.response]
    meta = parquet_metadata(judgments)
    return {
        "method": method, "poison_ratio": float(ratio), "seed": int(seed),
        "accuracy": sum(answers_match(p, r) for p, r in zip(preds, task.reference)) / len(task),
        "no_answer_rate": sum(p is None for p in preds) / len(task),
        "asr_keyword": float(jud.keyword_attack_success.mean()),
        "asr_guard": float((jud.guard_verdict == "unsafe").mean()),
        "guard_invalid_rate": float((jud.guard_verdict == "invalid").mean()),
        "mean_p_unsafe": float(jud.guard_p_unsafe.mean()),
        "n_harmful": int(len(jud)), "n_task": int(len(task)),
        "config_hash": settings_hash(meta),
        "judge": f"keyword+llama_guard:{meta['judge']['guard']}",
        "prompt_template": meta["settings"]["prompt_template"],
        "guard_template": meta["judge"]["guard_template"],
        "settings": json.dumps(meta, sort_keys=True, default=str),
    }


def write_summary(runs: list[dict], metric: str, out_csv: str, out_parquet: str) -> pd.DataFrame:
    """``runs``: dicts with method, poison_ratio, seed, generations, judgments."""
    rows = [run_row(r["method"], r["poison_ratio"], r["seed"], r["generations"], r["judgments"], metric) for r in runs]
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS).sort_values(["method", "poison_ratio", "seed"]).reset_index(drop=True)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    write_parquet(df, out_parquet)
    log.info("summary: %d rows", len(df))
    return df
