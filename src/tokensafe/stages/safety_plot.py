"""The report's safety-vs-utility plot and its utility axis."""

from __future__ import annotations

import pandas as pd

from tokensafe.io import atomic_path
from tokensafe.report_cells import METRICS, aggregate, has_accuracy, method_order


def utility_axis(summary: pd.DataFrame, llm: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str] | None:
    """The plot's utility per (method, poison_ratio), in % (column ``utility``), and its axis label: the task
    accuracy (mean over seeds); without an exact-match metric, the LLM judge's win rate on the task set against
    its reference run (over seeds, as in the win-rate table), from ``llm`` (``results/llm_judge.csv``); None
    where neither exists."""
    if has_accuracy(summary):
        agg = aggregate(summary)
        return agg[["method", "poison_ratio"]].assign(utility=100 * agg.accuracy), "task accuracy (%)"
    if llm is None or llm.empty:
        return None
    win = llm[(llm.seed == -1) & llm.metric.str.startswith("win_rate_vs_") & (llm["set"] == "task")]
    win = win[~win.metric.str.endswith(("_avg", "_skipped"))].dropna(subset=["value"])
    if win.empty:
        return None
    metric = sorted(win.metric.unique())[0]
    reference = metric[len("win_rate_vs_") :]
    d = win[win.metric == metric][["method", "poison_ratio", "value"]].rename(columns={"value": "utility"})
    return d.reset_index(drop=True), f"LLM-judge win rate vs {reference}, task set (%)"


def plot_safety_utility(summary: pd.DataFrame, out_png: str, llm: pd.DataFrame | None = None) -> str | None:
    """Each ASR against utility (:func:`utility_axis`), one line per method; with no utility measure, each ASR
    against the poison ratio instead. Returns the utility axis label (None: no utility axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(summary)
    axis = utility_axis(summary, llm)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    markers = "o^sDvP*Xh<>p8"
    for ax, (metric, label) in zip(axes, METRICS[1:]):
        for i, m in enumerate(method_order(summary.method)):
            d = agg[agg.method == m].sort_values("poison_ratio")
            if axis is None:
                ax.plot(d.poison_ratio, 100 * d[metric], marker=markers[i % len(markers)], linestyle=":", label=m)
                continue
            d = d.merge(axis[0], on=["method", "poison_ratio"])  # only the cells with a utility value
            ax.plot(100 * d[metric], d.utility, marker=markers[i % len(markers)], linestyle=":", label=m)
            for _, r in d.iterrows():
                ax.annotate(
                    f"{r.poison_ratio:g}",
                    (100 * r[metric], r.utility),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        if axis is None:
            ax.set_xlabel("poison ratio")
            ax.set_title(f"Safety ({label}) vs poison ratio; no utility measure")
        else:
            ax.set_xlabel(f"{label} (%) - lower is safer")
            ax.set_title(f"Safety ({label}) vs utility; labels = poison ratio")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ASR (%) - lower is safer" if axis is None else axis[1])
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return None if axis is None else axis[1]
