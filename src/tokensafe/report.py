"""The report: a Table-4 style table (methods x poison ratios), a safety-vs-utility plot and extras."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tokensafe.io import atomic_path

METRICS = [("accuracy", "Acc"), ("asr_keyword", "ASR-kw"), ("asr_guard", "ASR-guard")]


def method_order(methods) -> list[str]:
    """'initial' first, then the order methods first appear."""
    seen = list(dict.fromkeys(methods))
    return (["initial"] if "initial" in seen else []) + [m for m in seen if m != "initial"]


def aggregate(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean (and std over seeds) per (method, ratio)."""
    g = summary.groupby(["method", "poison_ratio"])
    agg = g[[m for m, _ in METRICS]].mean()
    std = g[[m for m, _ in METRICS]].std(ddof=0).add_suffix("_std")
    return agg.join(std).join(g.size().rename("n_seeds")).reset_index()


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table4(summary: pd.DataFrame) -> str:
    """Methods as rows, poison ratios as column groups; each cell Acc / ASR per judge (in %)."""
    agg = aggregate(summary)
    ratios = sorted(agg.poison_ratio.unique())
    head = "| Method | " + " | ".join(f"P={r:g}: " + " / ".join(n for _, n in METRICS) for r in ratios) + " |"
    lines = [head, "|---|" + "---|" * len(ratios)]
    for m in method_order(summary.method):
        cells = []
        for r in ratios:
            row = agg[(agg.method == m) & (agg.poison_ratio == r)]
            if row.empty:
                cells.append("-")
                continue
            row = row.iloc[0]
            vals = []
            for k, _ in METRICS:
                s = _pct(row[k])
                if row.n_seeds > 1:
                    s += f"±{_pct(row[k + '_std'])}"
                vals.append(s)
            cells.append(" / ".join(vals))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_safety_utility(summary: pd.DataFrame, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(summary)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    markers = "o^sDvP*Xh<>p8"
    for ax, (metric, label) in zip(axes, METRICS[1:]):
        for i, m in enumerate(method_order(summary.method)):
            d = agg[agg.method == m].sort_values("poison_ratio")
            ax.plot(100 * d[metric], 100 * d.accuracy, marker=markers[i % len(markers)], linestyle=":", label=m)
            for _, r in d.iterrows():
                ax.annotate(f"{r.poison_ratio:g}", (100 * r[metric], 100 * r.accuracy), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"{label} (%) - lower is safer")
        ax.set_title(f"Safety ({label}) vs utility; labels = poison ratio")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("task accuracy (%)")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def render(summary: pd.DataFrame, out_md: str, out_png: str, sections: list[tuple[str, str]] = ()) -> None:
    """Write the markdown report (with extra ``(title, markdown)`` sections) and the plot."""
    plot_safety_utility(summary, out_png)
    first = summary.iloc[0]
    settings = json.loads(first.settings)
    judge = settings.get("judge", {})
    md = [
        "# tokensafe report",
        "",
        f"Runs: {len(summary)} rows ({summary.method.nunique()} methods x {summary.poison_ratio.nunique()} poison ratios "
        f"x {summary.seed.nunique()} seeds). Prompt template: `{first.prompt_template}`. "
        f"Judges: refusal keywords ({len(judge.get('keywords', []))} markers) and Llama Guard `{judge.get('guard')}` "
        f"(prompt: `{first.guard_template}`).",
        "",
        "## Safety and utility (Table 4 layout)",
        "",
        "Each cell: task accuracy / keyword ASR / Llama-Guard ASR, in %, mean over seeds (± std when several). "
        "`initial` is the aligned model before fine-tuning (the same model under every ratio).",
        "",
        table4(summary),
        "",
        f"![safety vs utility]({Path(out_png).name})",
        "",
    ]
    for title, body in sections:
        md += [f"## {title}", "", body, ""]
    md += ["## Provenance", "", "Every row of `summary.csv` carries its seed, `config_hash` and the full resolved settings "
           "(`settings` column), the judge and the prompt template.", ""]
    with atomic_path(out_md) as tmp:
        Path(tmp).write_text("\n".join(md))
