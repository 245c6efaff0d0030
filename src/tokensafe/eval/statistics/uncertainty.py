"""Aggregates over seeds with 95 % intervals, and the noise verdicts for the key method pairs.

Tables (``results/summary_by_method.csv``, ``results/comparisons.csv``) are built from the per-prompt
outcomes of every run (``results/outcomes.parquet``); the interval arithmetic is :mod:`tokensafe.eval.statistics.stats`.
Pairs compared at each poison ratio where both are present: SFT vs each defence, each method vs
``initial``; and TOSS-Pro's last round vs TOSS's round 0 for the mask's precision and recall. A metric with no
outcomes (accuracy under ``data.task_metric: none``) has no aggregate and no comparison rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tokensafe.eval.statistics.stats import cell as cell_stats
from tokensafe.eval.statistics.stats import paired_difference, paired_seed_difference

OUTCOME_COLUMNS = ["method", "poison_ratio", "seed", "metric", "prompt_id", "value"]
METRICS = ["accuracy", "asr_keyword", "asr_guard"]
STAT_COLUMNS = ["n_seeds", "mean", "seed_ci_low", "seed_ci_high", "prompt_ci_low", "prompt_ci_high"]
COMPARISON_COLUMNS = ["a", "b", "poison_ratio", "metric", *STAT_COLUMNS, "verdict"]


def _wide(cell: pd.DataFrame, method: str, ratio: float, metric: str) -> pd.DataFrame:
    """One cell's outcomes as seeds (rows, ascending) x prompts (columns, by id); every seed must have
    answered the same prompts."""
    wide = cell.pivot(index="seed", columns="prompt_id", values="value").sort_index()
    if wide.isna().any().any():
        raise ValueError(f"{method} at P={ratio:g}, {metric}: the seeds answered different prompts")
    return wide


def outcome_matrix(outcomes: pd.DataFrame, method: str, ratio: float, metric: str) -> tuple[list[int], np.ndarray]:
    """``[n_seeds, n_prompts]`` outcomes of one cell, with its seeds."""
    d = outcomes[(outcomes.method == method) & (outcomes.poison_ratio == ratio) & (outcomes.metric == metric)]
    wide = _wide(d, method, ratio, metric)
    return [int(s) for s in wide.index], wide.to_numpy(np.float64)


def by_method(outcomes: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, poison_ratio, metric): mean over seeds, seed interval, prompt interval."""
    rows = []
    for (method, ratio, metric), d in outcomes.groupby(["method", "poison_ratio", "metric"], sort=True):
        s = cell_stats(_wide(d, method, ratio, metric).to_numpy(np.float64))
        rows.append(
            {
                "method": method,
                "poison_ratio": ratio,
                "metric": metric,
                **{k: s[k] for k in [*STAT_COLUMNS, "n_prompts"]},
            }
        )
    return pd.DataFrame(rows, columns=["method", "poison_ratio", "metric", *STAT_COLUMNS, "n_prompts"])


def method_pairs(outcomes: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(a, b, ratio): every defence vs sft, and every method vs initial, at ratios where both ran."""
    present = set(zip(outcomes.method, outcomes.poison_ratio))
    methods = sorted({m for m, _ in present})
    pairs = []
    for ratio in sorted({r for _, r in present}):
        for m in methods:
            if m in ("sft", "initial") or (m, ratio) not in present:
                continue
            if ("sft", ratio) in present:
                pairs.append((m, "sft", ratio))
        for m in methods:
            if m != "initial" and (m, ratio) in present and ("initial", ratio) in present:
                pairs.append((m, "initial", ratio))
    return pairs


def comparisons(outcomes: pd.DataFrame, mask_summaries: list[dict] = ()) -> pd.DataFrame:
    """The differences a - b with both intervals and a verdict (see :mod:`tokensafe.eval.statistics.stats`)."""
    rows = []
    present = set(outcomes.metric)  # no accuracy rows where the task set has no exact-match metric
    for a, b, ratio in method_pairs(outcomes):
        for metric in [m for m in METRICS if m in present]:
            sa, ma = outcome_matrix(outcomes, a, ratio, metric)
            sb, mb = outcome_matrix(outcomes, b, ratio, metric)
            seeds = sorted(set(sa) & set(sb))  # paired by seed: the seeds both ran
            if not seeds:
                continue
            ma, mb = ma[[sa.index(s) for s in seeds]], mb[[sb.index(s) for s in seeds]]
            rows.append({"a": a, "b": b, "poison_ratio": ratio, "metric": metric, **paired_difference(ma, mb)})
    rows += toss_pro_vs_toss(mask_summaries)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def toss_pro_vs_toss(mask_summaries: list[dict]) -> list[dict]:
    """TOSS-Pro's last round minus TOSS's round 0 (mask precision and recall against the poison tokens),
    paired by seed at each ratio that has both; one number per seed, so the seed interval only."""
    if not mask_summaries:
        return []
    m = pd.DataFrame(mask_summaries)
    rows = []
    for ratio, d in m.groupby("poison_ratio", sort=True):
        last = int(d["round"].max())
        if last == 0:
            continue
        r0 = d[d["round"] == 0].set_index("seed")
        rt = d[d["round"] == last].set_index("seed")
        seeds = sorted(set(r0.index) & set(rt.index))
        for key in ("precision", "recall"):
            col = f"poison_{key}"
            rows.append(
                {
                    "a": f"toss_pro (round {last})",
                    "b": "toss (round 0)",
                    "poison_ratio": float(ratio),
                    "metric": f"mask_{key}",
                    **paired_seed_difference(rt.loc[seeds, col], r0.loc[seeds, col]),
                }
            )
    return rows
