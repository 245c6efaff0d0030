"""The pieces every report section shares: the headline metrics, method order, means over seeds, cells.

A room of its own (pandas only) because the report's sections live in two rooms: the report stage's
(tokensafe.stages.report, .judge_report, .safety_plot) and each method family's (tokensafe.methods.toss.toss_report,
tokensafe.methods.pact.pact_report), and a family may not import stages."""

from __future__ import annotations

import pandas as pd

METRICS = [("accuracy", "Acc"), ("asr_keyword", "ASR-kw"), ("asr_guard", "ASR-guard")]
NO_METRIC_NOTE = (
    "The task set has no exact-match metric (`data.task_metric: none`): no answer is extracted from the task "
    "responses, so there is no task accuracy and no share of answers without an extractable answer."
)


def has_accuracy(summary: pd.DataFrame) -> bool:
    """False where the task set has no exact-match metric (``data.task_metric: none``: accuracy NaN in every row)."""
    return bool(summary["accuracy"].notna().any())


def shown_metrics(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """The (column, label) pairs the tables show: every metric, or the ASRs alone without an exact-match metric."""
    return METRICS if has_accuracy(summary) else METRICS[1:]


def method_order(methods) -> list[str]:
    """'initial' first, then the order methods first appear."""
    seen = list(dict.fromkeys(methods))
    return (["initial"] if "initial" in seen else []) + [m for m in seen if m != "initial"]


def aggregate(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (method, ratio), with the number of seeds."""
    g = summary.groupby(["method", "poison_ratio"])
    return g[[m for m, _ in METRICS]].mean().join(g.size().rename("n_seeds")).reset_index()


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def metrics_cell(row, metrics=METRICS) -> str:
    """Accuracy / keyword ASR / guard ASR (or the ``metrics`` given) of an aggregated row, in %."""
    return " / ".join(pct(row[k]) for k, _ in metrics)


def cells(table: pd.DataFrame, method: str, ratios, fmt) -> list[str]:
    """One method's cells across the poison ratios: ``fmt(row)`` of its row at each ratio, '-' where it did not run."""
    cells = []
    for r in ratios:
        row = table[(table.method == method) & (table.poison_ratio == r)]
        cells.append(fmt(row.iloc[0]) if len(row) else "-")
    return cells
