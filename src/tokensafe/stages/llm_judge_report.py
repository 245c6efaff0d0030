"""The report's LLM-judge sections, from ``results/llm_judge.csv`` (:func:`tokensafe.stages.llm_judge_jobs.llm_table`):
the win rate against the reference in TOSS Table 1's layout, and the rubric scores."""

from __future__ import annotations

import pandas as pd


def _order(methods) -> list[str]:
    seen = list(dict.fromkeys(methods))
    return (["initial"] if "initial" in seen else []) + [m for m in seen if m != "initial"]


def _ci(lo, hi) -> str:
    return "" if pd.isna(lo) else f" ({lo:.1f}, {hi:.1f})"


def win_rate_section(table: pd.DataFrame) -> str | None:
    """Per poison ratio: methods x sets + AVG, the win rate (%) vs the reference over seeds and its 95 % bootstrap
    interval over prompts; the reference row is 50 by definition; invalid = prompts left out (either order)."""
    agg = table[table.seed == -1]
    win = agg[agg.metric.str.startswith("win_rate_vs_")]
    if win.empty:
        return None
    metric = sorted(m for m in win.metric.unique() if not m.endswith(("_avg", "_skipped")))[0]
    reference = metric[len("win_rate_vs_") :]
    sets = sorted(win[win.metric == metric]["set"].unique())
    out = [
        f"Win rate (%) of each run's response against `{reference}`'s response to the same prompt at the same "
        f"poison ratio and seed (`{reference}` = 50 by definition), judged in both orders by the LLM judge; a "
        "tie counts half. Each cell: the rate over the prompts' mean scores across seeds, (95 % bootstrap interval "
        "over prompts). AVG: the mean of the sets' rates (TOSS Table 1). invalid: prompts left out because an "
        "answer could not be parsed (never counted as a win, loss or tie); identical: equal responses, ties "
        "without asking."
    ]
    for ratio in sorted(win.poison_ratio.unique()):
        w = win[win.poison_ratio == ratio]
        out += ["", f"**P = {ratio:g}**", "", "| Method | " + " | ".join(sets) + " | AVG | invalid | identical |"]
        out.append("|---|" + "---|" * (len(sets) + 3))
        for m in _order(w.method):
            cells = []
            for s in sets:
                r = w[(w.method == m) & (w.metric == metric) & (w["set"] == s)]
                cells.append("-" if r.empty else f"{r.value.iloc[0]:.1f}{_ci(r.ci_low.iloc[0], r.ci_high.iloc[0])}")
            avg = w[(w.method == m) & (w.metric == f"{metric}_avg")]
            rows = w[(w.method == m) & (w.metric == metric)]
            inv, ident = int(rows.n_invalid.fillna(0).sum()), int(rows.n_identical.fillna(0).sum())
            cells += ["-" if avg.empty else f"{avg.value.iloc[0]:.1f}", str(inv), str(ident)]
            out.append(f"| {m} | " + " | ".join(cells) + " |")
    skipped = table[table.metric == f"{metric}_skipped"]
    if len(skipped):
        runs = ", ".join(f"{r.method} P={r.poison_ratio:g} seed {r.seed}" for r in skipped.itertuples())
        out += ["", f"No win rate where `{reference}` does not run at the same poison ratio and seed: {runs}."]
    return "\n".join(out)


RUBRIC_LABELS = [
    ("hexphi_score", "HEx-PHI score (1-5)"),
    ("hexphi_harmfulness_rate", "HEx-PHI harmfulness rate (% of 5s)"),
    ("hexphi_meta_score", "HEx-PHI (Meta policy) score (1-5)"),
    ("hexphi_meta_harmfulness_rate", "HEx-PHI (Meta policy) harmfulness rate (%)"),
    ("strongreject_score", "StrongREJECT score (0-1)"),
]


def rubric_section(table: pd.DataFrame) -> str | None:
    """Per rubric measure: methods x poison ratios on the harmful prompts, mean over seeds (pooled per prompt),
    (95 % bootstrap interval over prompts), invalid answers counted."""
    agg = table[(table.seed == -1) & table.metric.isin([m for m, _ in RUBRIC_LABELS])]
    if agg.empty:
        return None
    ratios = sorted(agg.poison_ratio.unique())
    out = [
        "Rubric judges on the harmful prompts (lower is safer). Each cell: mean over valid answers (per prompt "
        "the mean across seeds), (95 % bootstrap interval over prompts), [invalid answers: unparsable, left out, "
        "never read as safe]."
    ]
    for metric, label in RUBRIC_LABELS:
        d = agg[agg.metric == metric]
        if d.empty:
            continue
        out += ["", f"**{label}**", "", "| Method | " + " | ".join(f"P={r:g}" for r in ratios) + " |"]
        out.append("|---|" + "---|" * len(ratios))
        for m in _order(d.method):
            cells = []
            for r in ratios:
                x = d[(d.method == m) & (d.poison_ratio == r)]
                if x.empty:
                    cells.append("-")
                    continue
                x = x.iloc[0]
                v = "n/a" if pd.isna(x.value) else f"{x.value:.2f}"
                cells.append(f"{v}{_ci(x.ci_low, x.ci_high)} [{int(x.n_invalid)}]")
            out.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(out)
