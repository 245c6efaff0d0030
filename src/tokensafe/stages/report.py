"""The report: a Table-4 style table (methods x poison ratios), a safety-vs-utility plot and extras.

Under ``data.task_metric: none`` the summary's accuracy is NaN in every row (tokensafe.stages.summary): the
tables leave accuracy out and say so, and the plot's utility axis is the LLM judge's task-set win rate where
that judge ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tokensafe.eval.utility import benchmark_tables
from tokensafe.io import read_parquet, write_text
from tokensafe.methods.pact.pact_report import pact_conflicts_section, pact_ladder_section, safety_tokens_section
from tokensafe.methods.toss.toss_report import toss_section
from tokensafe.report_cells import (  # noqa: F401 - aggregate, has_accuracy: the report's public API too
    METRICS,
    NO_METRIC_NOTE,
    aggregate,
    cells,
    has_accuracy,
    method_order,
    metrics_cell,
    pct,
    shown_metrics,
)
from tokensafe.stages.safety_judge_report import agreement_section, classifier_section
from tokensafe.stages.safety_plot import plot_safety_utility, utility_axis  # noqa: F401 - re-exported


def table4(summary: pd.DataFrame) -> str:
    """Methods as rows, poison ratios as column groups; each cell Acc / ASR per judge (in %; no Acc without an
    exact-match metric)."""
    agg = aggregate(summary)
    metrics = shown_metrics(summary)
    ratios = sorted(agg.poison_ratio.unique())
    head = "| Method | " + " | ".join(f"P={r:g}: " + " / ".join(n for _, n in metrics) for r in ratios) + " |"
    lines = [head, "|---|" + "---|" * len(ratios)]
    for m in method_order(summary.method):
        lines.append(f"| {m} | " + " | ".join(cells(agg, m, ratios, lambda row: metrics_cell(row, metrics))) + " |")
    return "\n".join(lines)


def _interval(lo: float, hi: float) -> str:
    return "-" if pd.isna(lo) else f"{pct(lo)}, {pct(hi)}"


def interval_section(by_method: pd.DataFrame) -> str:
    """Per metric, methods x poison ratios: mean over seeds, [95 % interval over seeds], (95 % interval over
    prompts); from ``summary_by_method.csv``."""
    ratios = sorted(by_method.poison_ratio.unique())

    def cell(x) -> str:
        return (
            f"{pct(x['mean'])} [{_interval(x.seed_ci_low, x.seed_ci_high)}] "
            f"({_interval(x.prompt_ci_low, x.prompt_ci_high)}) n={x.n_seeds}"
        )

    out = [
        "Each cell: mean over seeds (%), then [95 % t-interval over seeds] and (95 % Wilson interval over "
        "prompts); n = number of seeds. A seed interval needs two seeds; `initial` under greedy decoding is the "
        "same model and the same answers for every seed."
    ]
    for metric, name in METRICS:
        d = by_method[by_method.metric == metric]
        if d.empty:  # accuracy without an exact-match metric
            continue
        out += [
            "",
            f"**{name}**",
            "",
            "| Method | " + " | ".join(f"P={r:g}" for r in ratios) + " |",
            "|---|" + "---|" * len(ratios),
        ]
        for m in method_order(d.method):
            out.append(f"| {m} | " + " | ".join(cells(d, m, ratios, cell)) + " |")
    return "\n".join(out)


def comparisons_section(comp: pd.DataFrame) -> str:
    """The key pairs (``comparisons.csv``): difference a - b in points, its intervals and the verdict."""
    if comp.empty:
        return "No pairs to compare."
    few = comp[comp.n_seeds < 2]
    comp = comp[comp.n_seeds >= 2]
    if comp.empty:
        return (
            f"Every pair has a single seed: no verdicts ({len(few)} rows in `comparisons.csv`). Add seeds to compare."
        )
    names = dict(METRICS) | {"mask_precision": "mask precision", "mask_recall": "mask recall"}
    lines = [
        "Difference a - b in percentage points, paired by seed (the same fine-tuning set) and by prompt; "
        "[95 % interval over seeds] and (95 % bootstrap interval over prompts). *higher* / *lower*: both "
        "intervals exclude 0; *within noise*: at least one does not. The TOSS mask rows have one number per "
        "seed, so only the seed interval.",
        "",
        "| a | b | P | metric | n | a - b | over seeds | over prompts | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in comp.itertuples():
        lines.append(
            f"| {r.a} | {r.b} | {r.poison_ratio:g} | {names.get(r.metric, r.metric)} | {r.n_seeds} | "
            f"{100 * r.mean:+.1f} | {_interval(r.seed_ci_low, r.seed_ci_high)} | "
            f"{_interval(r.prompt_ci_low, r.prompt_ci_high)} | {r.verdict} |"
        )
    if len(few):
        pairs = sorted({f"{a} vs {b}" for a, b in zip(few.a, few.b)})
        lines += [
            "",
            "Pairs with a single seed, so no verdict (their differences are in `comparisons.csv`): "
            f"{', '.join(pairs)}.",
        ]
    return "\n".join(lines)


def no_answer_section(summary: pd.DataFrame) -> str:
    """Share of task responses with no extractable answer per (method, ratio), mean over seeds: a method
    whose accuracy falls because it lost the answer format shows here, one that answers wrongly does not."""
    rates = summary.groupby(["method", "poison_ratio"]).no_answer_rate.mean()
    if not rates.any():
        return "Every task response had an extractable answer."
    ratios = sorted(summary.poison_ratio.unique())
    lines = [
        "Share of task responses from which no answer could be extracted (%, mean over seeds); the rest of "
        "the accuracy gap is wrong answers.",
        "",
        "| Method | " + " | ".join(f"P={r:g}" for r in ratios) + " |",
        "|---|" + "---|" * len(ratios),
    ]
    for m in method_order(summary.method):
        row_cells = [pct(rates[(m, r)]) if (m, r) in rates.index else "-" for r in ratios]
        lines.append(f"| {m} | " + " | ".join(row_cells) + " |")
    return "\n".join(lines)


def utility_pointer(axis: str | None, lm_eval: bool) -> str:
    """Where a run without an exact-match metric measures utility: the LLM judge's task-set win rate (``axis``:
    the plot's utility label, None without it) and the lm-eval benchmarks; or that it measures none."""
    where = []
    if axis is not None:
        where.append(
            "the LLM judge's win rate on the task set (section 'Win rate vs SFT (Table 1 layout)', column `task`)"
        )
    if lm_eval:
        where.append("the lm-eval benchmarks (section 'Utility benchmarks (lm-evaluation-harness)')")
    if not where:
        return (
            "This run measures no utility: turn on `judge.llm` (its task-set win rate) or name lm-eval benchmarks in "
            "`utility_benchmarks.tasks`."
        )
    return "Utility is measured by " + " and by ".join(where) + "."


def render(
    *,
    summary: pd.DataFrame,
    out_md: str,
    out_png: str,
    sections: list[tuple[str, str]] = (),
    llm: pd.DataFrame | None = None,
    lm_eval: bool = False,
    card: str | None = None,
    by_method: pd.DataFrame | None = None,
) -> None:
    """Write the markdown report (with extra ``(title, markdown)`` sections) and the plot; ``llm``: the LLM-judge
    table, ``lm_eval``: whether lm-eval results are among the sections (both for a run without an exact-match
    metric, to say where its utility is); ``card``: the data card's table (results/data/card.md), shown first;
    ``by_method``: the intervals over seeds (results/summary_by_method.csv) the plot draws."""
    axis = plot_safety_utility(summary, out_png, llm, by_method)
    first = summary.iloc[0]
    settings = json.loads(first.settings)
    judge = settings.get("judge", {})
    md = [
        "# tokensafe report",
        "",
        f"Runs: {len(summary)} rows ({summary.method.nunique()} methods x "
        f"{summary.poison_ratio.nunique()} poison ratios "
        f"x {summary.seed.nunique()} seeds). Prompt template: `{first.prompt_template}`. "
        f"Judges: refusal keywords ({len(judge.get('keywords', []))} markers) and Llama Guard `{judge.get('guard')}` "
        f"(prompt: `{first.guard_template}`).",
        "",
    ]
    if card:
        md += [
            "## Data",
            "",
            "What every result was measured on: per data role its source, revision, rows, filters, prompt lengths "
            "(tokens, under the run's tokenizer and template) and hash. A row of `summary.csv` carries the hash over "
            "the roles its run read (`data_card`) and names its evaluation sets (`harmful_eval_data`, "
            "`task_eval_data`); `results/data/card.json` has every file's sha256.",
            "",
            card.strip(),
            "",
        ]
    md += ["## Safety and utility (Table 4 layout)", ""]
    if has_accuracy(summary):
        md += [
            "Each cell: task accuracy / keyword ASR / Llama-Guard ASR, in %, mean over seeds (intervals and seed "
            "counts: next section). `initial` is the aligned model before fine-tuning (the same model under every "
            "ratio).",
            "",
            table4(summary),
            "",
            f"![safety vs utility]({Path(out_png).name})",
            "",
        ]
    else:
        plot = (
            f"The plot's utility axis is the {axis}."
            if axis
            else "The plot has no utility axis (no LLM-judge task-set win rate): each ASR against the poison ratio."
        )
        md += [
            "Each cell: keyword ASR / Llama-Guard ASR, in %, mean over seeds (intervals and seed counts: "
            "'Uncertainty' section). `initial` is the aligned model before fine-tuning (the same model under every "
            f"ratio). {NO_METRIC_NOTE} {utility_pointer(axis, lm_eval)}",
            "",
            table4(summary),
            "",
            f"![safety vs utility]({Path(out_png).name})",
            "",
            plot,
            "",
        ]
    for title, body in sections:
        md += [f"## {title}", "", body, ""]
    md += [
        "## Provenance",
        "",
        "Every row of `summary.csv` carries its seed, `config_hash` and the full resolved settings "
        "(`settings` column), the judge, the prompt template and its data (`data_card`, `harmful_eval_data`, "
        "`task_eval_data`).",
        "",
    ]
    write_text("\n".join(md), out_md)


def write_report(
    *,
    summary_path: str,
    by_method_path: str,
    comparisons_path: str,
    toss_masks: list[str],
    safety_tokens: str | None,
    pact_conflicts: list[str],
    out_md: str,
    out_png: str,
    lm_eval_path: str | None = None,
    agreement_path: str | None = None,
    llm_table: str | None = None,
    card_md: str | None = None,
) -> None:
    """The report stage: every section whose inputs this run has, then :func:`render`."""
    summary = read_parquet(summary_path)
    by_method = pd.read_csv(by_method_path)
    sections = [
        ("Uncertainty: 95 % intervals over seeds and prompts", interval_section(by_method)),
        ("Is the difference beyond the noise?", comparisons_section(pd.read_csv(comparisons_path))),
    ]
    if has_accuracy(summary):  # else no answers are extracted (Table 4's text says so)
        sections.append(("Task answers without an extractable answer", no_answer_section(summary)))
    lm_eval = pd.read_csv(lm_eval_path) if lm_eval_path else pd.DataFrame()
    if not lm_eval.empty:
        sections.append(("Utility benchmarks (lm-evaluation-harness)", benchmark_tables.section(lm_eval, method_order)))

    extra = classifier_section(summary)
    if extra:
        sections.append(("Extra classifier judges: ASR and invalid verdicts", extra))
    if agreement_path:
        sections.append(("Judge agreement", agreement_section(pd.read_csv(agreement_path))))
    if toss_masks:
        sections.append(("TOSS masks against the known poison tokens", toss_section(list(toss_masks))))
    if safety_tokens:
        sections.append(("PACT safety tokens", safety_tokens_section(safety_tokens)))
    if pact_conflicts:
        sections.append(
            ("PACT: where the weighted KL fights the cross-entropy", pact_conflicts_section(list(pact_conflicts)))
        )
    ladder = pact_ladder_section(summary)
    if ladder:
        sections.append(("PACT ablation ladder (Table 5 layout)", ladder))
    llm = None
    if llm_table:  # judge.llm (tokensafe.stages.llm_judge_report)
        from tokensafe.stages.llm_judge_report import rubric_section, win_rate_section

        llm = pd.read_csv(llm_table)
        for title, body in (
            ("Win rate vs SFT (Table 1 layout)", win_rate_section(llm)),
            ("LLM-judge harmfulness rubrics", rubric_section(llm)),
        ):
            if body:
                sections.insert(1 if title.startswith("Win") else 2, (title, body))
    card = Path(card_md).read_text() if card_md else None
    render(
        summary=summary,
        out_md=out_md,
        out_png=out_png,
        sections=sections,
        llm=llm,
        lm_eval=not lm_eval.empty,
        card=card,
        by_method=by_method,
    )
