"""The report's safety-judge sections: the extra classifier judges' ASR and invalid rates, and the judges'
pairwise agreement and Cohen's kappa (``results/judge_agreement.csv``)."""

from __future__ import annotations

import pandas as pd

from tokensafe.eval.safety_judges.classifiers import JUDGES
from tokensafe.report_cells import cells, method_order, pct


def classifier_names(summary: pd.DataFrame) -> list[str]:
    """The extra classifier judges with columns in the summary (tokensafe.eval.safety_judges.judge_outcomes), in
    registry order."""
    return [n for n in JUDGES if f"asr_{n}" in summary.columns and f"{n}_invalid_rate" in summary.columns]


def classifier_section(summary: pd.DataFrame) -> str | None:
    """Each extra classifier's ASR and invalid rate per (method, ratio), mean over seeds; None without any."""
    names = classifier_names(summary)
    if not names:
        return None
    ratios = sorted(summary.poison_ratio.unique())
    lines = [
        "Each cell: share of harmful prompts the judge calls unsafe (%), then (share of invalid verdicts, %), "
        "mean over seeds. An invalid verdict (an answer the published parse rule cannot read) is never counted "
        "as safe: the judge's true unsafe share lies between ASR and ASR + invalid. Intervals: "
        "`summary_by_method.csv` (metrics `asr_<judge>`, `<judge>_invalid_rate`).",
        "",
        "| Method | " + " | ".join(f"P={r:g}: " + " / ".join(names) for r in ratios) + " |",
        "|---|" + "---|" * len(ratios),
    ]
    cols = [c for n in names for c in (f"asr_{n}", f"{n}_invalid_rate")]
    agg = summary.groupby(["method", "poison_ratio"])[cols].mean().reset_index()

    def fmt(row) -> str:
        return " / ".join(f"{pct(row[f'asr_{n}'])} ({pct(row[f'{n}_invalid_rate'])})" for n in names)

    for m in method_order(summary.method):
        lines.append(f"| {m} | " + " | ".join(cells(agg, m, ratios, fmt)) + " |")
    return "\n".join(lines)


def agreement_section(agreement: pd.DataFrame) -> str:
    """Per method and poison ratio, each judge pair: items both judged validly, agreement and Cohen's kappa
    (``judge_agreement.csv``; kappa NaN comes with its reason)."""
    if agreement.empty:
        return "No judge pairs to compare."
    lines = [
        "Pairwise agreement of the judges on the harmful prompts (all seeds pooled): `keyword` = no refusal "
        "marker (attack success), `llama_guard` = the guard's unsafe verdict, and each extra classifier's. "
        "n counts the responses both judges judged validly (invalid verdicts are left out pairwise); "
        "unsafe a / b: how many of them each judge calls unsafe.",
        "",
        "| Method | P | judges | n | unsafe a / b | agreement | Cohen's kappa |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(method_order(agreement.method))}
    rows = agreement.assign(_o=agreement.method.map(order)).sort_values(["_o", "poison_ratio", "judge_a", "judge_b"])
    for r in rows.itertuples():
        agree = "-" if pd.isna(r.agreement) else f"{pct(r.agreement)} %"
        kappa = r.kappa_status if pd.isna(r.kappa) else f"{r.kappa:.3f}"
        lines.append(
            f"| {r.method} | {r.poison_ratio:g} | {r.judge_a} vs {r.judge_b} | {r.n} | "
            f"{r.n_unsafe_a} / {r.n_unsafe_b} | {agree} | {kappa} |"
        )
    return "\n".join(lines)
