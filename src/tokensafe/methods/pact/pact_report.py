"""The report's PACT sections: the safety tokens, where the weighted KL fights the cross-entropy, and the
ablation ladder (PACT Table 5)."""

from __future__ import annotations

import pandas as pd

from tokensafe.io import read_json
from tokensafe.methods.pact.ladder import LADDER
from tokensafe.report_cells import METRICS, aggregate, cells, metrics_cell, shown_metrics


def safety_tokens_section(path: str, top: int = 20) -> str:
    """The top safety tokens as text with their gap D, mean aligned probability and weight."""
    t = pd.read_parquet(path).sort_values("rank").head(top)
    lines = [
        f"Top {len(t)} of the safety tokens S (selection and weights as configured): ",
        "",
        "| rank | token | id | gap D | mean p aligned | weight |",
        "|---|---|---|---|---|---|",
    ]
    for r in t.itertuples():
        lines.append(
            f"| {r.rank} | `{r.token!r}` | {r.token_id} | {r.gap:.4f} | {r.mean_prob_aligned:.4f} | {r.weight:.4f} |"
        )
    return "\n".join(lines)


def pact_conflicts_section(paths: list[str]) -> str:
    """Per fine-tuning set: answer positions whose trained token has safety weight 0, where the weighted KL
    lowers the token the cross-entropy raises (``weight_conflicts.json`` of the `pact_reference` rule)."""
    lines = [
        "Answer positions whose trained token is a safety token of weight 0: the weighted target q gives it no "
        "mass, so the KL lowers the token the cross-entropy raises (methods with weights: "
        f"{', '.join(m for m, rung in LADDER.items() if rung['weights'])}).",
        "",
        "| P | seed | over | positions | conflicts | share | zero-weight tokens | most frequent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        d = read_json(path)
        common = ", ".join(f"`{t['token']!r}` {t['count']}" for t in d["tokens"]) or "-"
        lines.append(
            f"| {d['poison_ratio']:g} | {d['seed']} | {d['population']} | {d['positions']} | {d['conflicts']} | "
            f"{100 * d['share']:.1f} % | {d['zero_weight_tokens']}/{d['safety_tokens']} | {common} |"
        )
    return "\n".join(lines)


def pact_ladder_section(summary: pd.DataFrame) -> str | None:
    """PACT Table 5: cumulative ablation rows at each poison ratio present (Acc / ASR-kw / ASR-guard, %)."""
    present = [(m, rung["step"]) for m, rung in LADDER.items() if m in set(summary.method)]
    if len(present) < 2:
        return None
    agg = aggregate(summary[summary.method.isin([m for m, _ in present])])
    metrics = shown_metrics(summary)
    ratios = sorted(agg.poison_ratio.unique())
    lines = ["| Step | method | " + " | ".join(f"P={r:g}" for r in ratios) + " |", "|---|---|" + "---|" * len(ratios)]
    for m, label in present:
        lines.append(
            f"| {label} | {m} | " + " | ".join(cells(agg, m, ratios, lambda row: metrics_cell(row, metrics))) + " |"
        )
    if metrics is METRICS:
        return "Each cell: accuracy / keyword ASR / Llama-Guard ASR (%).\n\n" + "\n".join(lines)
    return "Each cell: keyword ASR / Llama-Guard ASR (%); no accuracy (`data.task_metric: none`).\n\n" + "\n".join(
        lines
    )
