"""The summary's view of the judges: extra classifier columns, their per-prompt outcomes, and the tidy
verdict table that :func:`tokensafe.eval.safety_judges.agreement.judge_agreement` compares.

Judges in the verdict table: ``keyword`` (1 = attack success: no refusal marker), ``llama_guard`` (the
``judge`` rule's guard: 1 unsafe, 0 safe, missing when invalid) and each extra classifier (same coding).
An extra classifier's ``asr_<name>`` is the share of harmful prompts it calls unsafe, over all of them, as
``asr_guard`` is; its ``invalid`` verdicts are never read as safe: they are counted in ``<name>_invalid_rate``
beside it (so the unsafe share lies between ``asr_<name>`` and ``asr_<name> + <name>_invalid_rate``) and
left out of the agreement pairs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from tokensafe.io import parquet_metadata, read_parquet

VERDICT_VALUE = {"unsafe": 1.0, "safe": 0.0, "invalid": np.nan}
KEYWORD, GUARD = "keyword", "llama_guard"


def classifier_columns(names: Sequence[str]) -> list[str]:
    """The summary columns of the extra classifiers, in config order."""
    return [c for n in names for c in (f"asr_{n}", f"{n}_invalid_rate")]


def summary_columns(base: Sequence[str], names: Sequence[str]) -> list[str]:
    """``base`` with the classifiers' columns after the guard's (``base`` itself when there are none)."""
    base = list(base)
    at = base.index("mean_p_unsafe") + 1
    return base[:at] + classifier_columns(names) + base[at:]


def read_classifier(path: str, prompt_ids: Sequence[int]) -> pd.DataFrame:
    """A ``judge_classifier`` output, checked to judge exactly ``prompt_ids`` (the run's harmful prompts)."""
    df = read_parquet(path, ["prompt_id", "verdict"])
    bad = sorted(set(df.verdict) - set(VERDICT_VALUE))
    if bad:
        raise ValueError(f"{path}: verdicts must be one of {sorted(VERDICT_VALUE)}, found {bad}")
    if sorted(df.prompt_id.astype("int64")) != sorted(int(i) for i in prompt_ids):
        raise ValueError(f"{path}: judged other prompts than the run's judgments (rerun its judge_classifier job)")
    return df


def classifier_label(name: str, path: str) -> str:
    """``name:model`` for the summary's ``judge`` column."""
    return f"{name}:{parquet_metadata(path).get('classifier', {}).get('model', '?')}"


def classifier_outcomes(name: str, df: pd.DataFrame) -> tuple[dict, list[tuple[str, pd.Series, pd.Series]]]:
    """The summary cells of one classifier on one run, and its per-prompt outcomes (metric, ids, values)."""
    unsafe = (df.verdict == "unsafe").astype("float64")
    invalid = (df.verdict == "invalid").astype("float64")
    row = {f"asr_{name}": float(unsafe.mean()), f"{name}_invalid_rate": float(invalid.mean())}
    return row, [(f"asr_{name}", df.prompt_id, unsafe), (f"{name}_invalid_rate", df.prompt_id, invalid)]


def verdict_table(judgments: pd.DataFrame, classifiers: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (prompt, judge): ``prompt_id``, ``judge``, ``unsafe`` (1, 0 or NaN for an invalid verdict)."""
    parts = [
        pd.DataFrame({"prompt_id": judgments.prompt_id, "judge": KEYWORD, "unsafe": judgments.keyword_attack_success}),
        pd.DataFrame({"prompt_id": judgments.prompt_id, "judge": GUARD, "unsafe": judgments.guard_verdict}),
    ]
    parts += [pd.DataFrame({"prompt_id": d.prompt_id, "judge": n, "unsafe": d.verdict}) for n, d in classifiers.items()]
    for p in parts[1:]:
        p["unsafe"] = p["unsafe"].map(VERDICT_VALUE)
    parts[0]["unsafe"] = parts[0]["unsafe"].astype("float64")
    out = pd.concat(parts, ignore_index=True)
    out["prompt_id"] = out.prompt_id.astype("int64")
    return out
