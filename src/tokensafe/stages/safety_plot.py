"""The report's safety-vs-utility plot and its utility axis.

One colour and one marker per method, the methods of a family (``tokensafe.methods.registry``) in shades of one
hue and ``initial`` in grey, so a method looks the same in every run whatever else it ran with. Points of
different methods at the same place are set side by side (a fixed order, so the same inputs give the same
bytes), and the 95 % intervals over seeds (``results/summary_by_method.csv``) are drawn as error bars where a
cell has two or more seeds.
"""

from __future__ import annotations

import colorsys
import math

import pandas as pd

from tokensafe.io import atomic_path
from tokensafe.methods.registry import METHODS
from tokensafe.report_cells import METRICS, aggregate, has_accuracy, method_order

INITIAL_COLOUR = (0.33, 0.33, 0.33)
# Family -> hue (HLS, 0-1); a family not named here takes the next of EXTRA_HUES (in sorted order of such
# families), a method outside the registry a grey. Members of a family differ in lightness (and marker).
FAMILY_HUES = {"sft": 0.0, "toss": 0.58, "pact": 0.33, "baselines": 0.78}
EXTRA_HUES = [0.08, 0.5, 0.9]
LIGHTNESS = (0.28, 0.62)  # darkest and lightest shade of a family, dark first in registry order
SATURATION = 0.75
MARKERS = "osD^vPX*hp<>d8H"
DODGE_PT = 8.0  # points closer than this (in points, both ways) are set side by side, this far apart
SIZES = (22.0, 80.0)  # marker areas (points^2) of the smallest and the largest poison ratio


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


def method_styles(methods) -> dict[str, tuple[tuple[float, float, float], str]]:
    """Method -> (RGB colour, marker). Fixed by the registry, not by the run: the k-th of a family's n methods
    (registry order) takes the k-th of n shades of the family's hue, and the marker is the method's place in
    the registry."""
    families = {m: spec.family for m, spec in METHODS.items()}
    extra = sorted(set(families.values()) - set(FAMILY_HUES))
    hues = {**FAMILY_HUES, **{f: EXTRA_HUES[i % len(EXTRA_HUES)] for i, f in enumerate(extra)}}
    known = ["initial", *METHODS]
    unknown = [m for m in dict.fromkeys(methods) if m not in known]
    styles = {}
    for m in dict.fromkeys(methods):
        if m == "initial":
            colour = INITIAL_COLOUR
        elif m in families:
            members = [x for x in METHODS if families[x] == families[m]]
            colour = colorsys.hls_to_rgb(hues[families[m]], _shade(members.index(m), len(members)), SATURATION)
        else:  # not a registered method: greys, in the order the run names them
            grey = _shade(unknown.index(m), len(unknown))
            colour = (grey, grey, grey)
        place = known.index(m) if m in known else len(known) + unknown.index(m)
        styles[m] = (tuple(float(c) for c in colour), MARKERS[place % len(MARKERS)])
    return styles


def _shade(k: int, n: int) -> float:
    """Lightness of the k-th of n shades, dark to light."""
    lo, hi = LIGHTNESS
    return (lo + hi) / 2 if n == 1 else lo + (hi - lo) * k / (n - 1)


def _legend_order(methods) -> list[str]:
    """``initial``, then the registry's order (families together), then methods outside it as the run names them."""
    known = ["initial", *METHODS]
    return sorted(dict.fromkeys(methods), key=lambda m: (known.index(m) if m in known else len(known), m))


def _intervals(by_method: pd.DataFrame | None, metric: str) -> pd.DataFrame:
    """(method, poison_ratio) -> the seed interval of ``metric`` in % (NaN where it has one seed)."""
    cols = ["method", "poison_ratio", f"{metric}_lo", f"{metric}_hi"]
    if by_method is None or by_method.empty:
        return pd.DataFrame(columns=cols)
    d = by_method[by_method.metric == metric]
    return pd.DataFrame(
        {
            "method": d.method,
            "poison_ratio": d.poison_ratio.astype(float),
            f"{metric}_lo": 100 * d.seed_ci_low,
            f"{metric}_hi": 100 * d.seed_ci_high,
        }
    )[cols]


def _points(agg, axis, by_method, metric) -> pd.DataFrame:
    """One row per (method, ratio) to draw: x, y and their intervals (NaN where none), in %."""
    keys = ["method", "poison_ratio"]
    asr = agg[keys].assign(poison_ratio=agg.poison_ratio.astype(float), asr=100 * agg[metric])
    asr = asr.merge(_intervals(by_method, metric), on=keys, how="left")
    lo, hi = f"{metric}_lo", f"{metric}_hi"
    if axis is None:  # ASR against the poison ratio
        return asr.assign(x=asr.poison_ratio, x_lo=math.nan, x_hi=math.nan, y=asr.asr, y_lo=asr[lo], y_hi=asr[hi])
    util = axis[0].assign(poison_ratio=axis[0].poison_ratio.astype(float))
    d = asr.merge(util, on=keys)  # only the cells with a utility value
    # Accuracy has seed intervals; the LLM judge's pooled win rate has none (its table gives a prompt interval).
    d = d.merge(_intervals(by_method if axis[1] == "task accuracy (%)" else None, "accuracy"), on=keys, how="left")
    return d.assign(x=d.asr, x_lo=d[lo], x_hi=d[hi], y=d.utility, y_lo=d.accuracy_lo, y_hi=d.accuracy_hi)


def _collapse(d: pd.DataFrame) -> pd.DataFrame:
    """One row per place a method sits at (the ratios there joined: ``initial`` is one model at every ratio)."""
    rows = []
    for _, g in d.groupby(["method", d.x.round(6), d.y.round(6)], sort=False):
        first = g.sort_values("poison_ratio").iloc[0]
        rows.append({**first.to_dict(), "ratios": ", ".join(f"{r:g}" for r in sorted(g.poison_ratio))})
    return pd.DataFrame(rows)


def _places(d: pd.DataFrame, tol_x: float, tol_y: float) -> list[int]:
    """Place index per row: points within the tolerances of a place's first point share it (greedy over
    sorted points, so the grouping is fixed by the inputs)."""
    order = sorted(range(len(d)), key=lambda i: (d.x.iloc[i], d.y.iloc[i], d["rank"].iloc[i]))
    firsts: list[int] = []
    place = [0] * len(d)
    for i in order:
        for k, f in enumerate(firsts):
            if abs(d.x.iloc[i] - d.x.iloc[f]) <= tol_x and abs(d.y.iloc[i] - d.y.iloc[f]) <= tol_y:
                place[i] = k
                break
        else:
            place[i] = len(firsts)
            firsts.append(i)
    return place


def _span(values, least: float) -> tuple[float, float]:
    """The range of the (non-NaN) values, widened about its centre to at least ``least``."""
    v = [x for x in values if not math.isnan(x)]
    lo, hi = min(v), max(v)
    grow = max(least - (hi - lo), 0.0) / 2
    return lo - grow, hi + grow


def ratio_sizes(ratios) -> dict[float, float]:
    """Poison ratio -> marker area (points^2), by rank among the run's ratios: the smallest ratio smallest."""
    rs = sorted({float(r) for r in ratios})
    if len(rs) == 1:
        return {rs[0]: (SIZES[0] + SIZES[1]) / 2}
    return {r: SIZES[0] + (SIZES[1] - SIZES[0]) * k / (len(rs) - 1) for k, r in enumerate(rs)}


def _draw_panel(ax, d: pd.DataFrame, styles, sizes, ratio_x: bool, box_pt: tuple[float, float]) -> None:
    """Points and error bars of one panel, points of different methods at one place side by side, and limits
    that keep every point inside."""
    d = d.assign(ratios=d.poison_ratio.map(lambda r: f"{r:g}")) if ratio_x else _collapse(d)
    order = _legend_order(d.method)
    d = d.assign(rank=d.method.map(order.index)).sort_values(["rank", "poison_ratio"]).reset_index(drop=True)
    # Marker area: the poison ratio (a point at several ratios: its largest); on a ratio axis, one size.
    area = d.ratios.map(lambda t: sizes[max(float(r) for r in t.split(", "))])
    d = d.assign(area=(SIZES[0] + SIZES[1]) / 2 if ratio_x else area)
    # At least 10 percentage points on a % axis, 0.01 on the poison-ratio axis (one place alone gets a readable scale).
    x_lo, x_hi = _span([*d.x, *d.x_lo, *d.x_hi], 0.01 if ratio_x else 10.0)
    y_lo, y_hi = _span([*d.y, *d.y_lo, *d.y_hi], 10.0)
    pad_y = 0.06 * (y_hi - y_lo)
    ax.set_ylim(y_lo - pad_y, y_hi + pad_y)
    tol_y = DODGE_PT / box_pt[1] * (y_hi - y_lo + 2 * pad_y)
    # Points within one dodge step of each other (in points, both ways) share a place and are set side by side;
    # the x limits are then made wide enough to hold the widest place.
    tol_x = DODGE_PT / box_pt[0] * (x_hi - x_lo) / 0.9
    d = d.assign(place=_places(d, tol_x, tol_y))
    widest = int(d.groupby("place").size().max())
    step = min(DODGE_PT / box_pt[0], 0.5 / widest)
    extent = step * (widest - 1) / 2
    span = (x_hi - x_lo) / max(1 - 2 * 0.05 - 2 * extent, 0.2)
    ax.set_xlim(x_lo - (0.05 + extent) * span, x_hi + (0.05 + extent) * span)
    d = d.assign(slot=d.groupby("place").cumcount(), n=d.groupby("place").method.transform("size"))
    d = d.assign(xd=d.x + (d.slot - (d.n - 1) / 2) * step * span)
    for m in order:
        g = d[d.method == m].sort_values("poison_ratio")
        colour, marker = styles[m]
        if len(g) > 1:  # in order of rising poison ratio
            ax.plot(g.xd, g.y, linestyle=":", linewidth=1, color=colour, zorder=2)
        has_x, has_y = g.x_lo.notna() & g.x_hi.notna(), g.y_lo.notna() & g.y_hi.notna()
        if has_x.any() or has_y.any():
            xerr = [(g.x - g.x_lo).clip(lower=0).where(has_x, 0.0), (g.x_hi - g.x).clip(lower=0).where(has_x, 0.0)]
            yerr = [(g.y - g.y_lo).clip(lower=0).where(has_y, 0.0), (g.y_hi - g.y).clip(lower=0).where(has_y, 0.0)]
            ax.errorbar(
                g.xd,
                g.y,
                xerr=xerr if has_x.any() else None,
                yerr=yerr if has_y.any() else None,
                fmt="none",
                ecolor=colour,
                elinewidth=1,
                capsize=2,
                alpha=0.6,
                zorder=3,
            )
        ax.scatter(g.xd, g.y, s=g.area, color=[colour], marker=marker, edgecolors="white", linewidths=0.5, zorder=4)


def _legend_labels(d: pd.DataFrame, methods: list[str], ratio_x: bool) -> dict[str, str]:
    """Method -> legend text: where a method sits at one place only, the ratios it ran at (else the points say)."""
    if ratio_x:
        return {m: m for m in methods}
    out = {}
    for m in methods:
        g = _collapse(d[d.method == m]) if (d.method == m).any() else None
        out[m] = f"{m} (P={g.ratios.iloc[0]})" if g is not None and len(g) == 1 else m
    return out


def safety_figure(
    summary: pd.DataFrame, llm: pd.DataFrame | None = None, by_method: pd.DataFrame | None = None
) -> tuple[object, str | None]:
    """The figure (two panels: keyword and Llama-Guard ASR) and its utility axis label (None: ASR against the
    poison ratio, no utility measure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    agg = aggregate(summary)
    axis = utility_axis(summary, llm)
    methods = _legend_order(method_order(summary.method))
    styles = method_styles(methods)
    sizes = ratio_sizes(agg.poison_ratio)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    fig.subplots_adjust(left=0.06, right=0.78, bottom=0.12, top=0.9, wspace=0.22)
    box = axes[0].get_position()
    box_pt = (box.width * fig.get_figwidth() * 72, box.height * fig.get_figheight() * 72)
    labels = {}
    for ax, (metric, label) in zip(axes, METRICS[1:]):
        d = _points(agg, axis, by_method, metric)
        if not d.empty:
            _draw_panel(ax, d, styles, sizes, axis is None, box_pt)
            labels = labels or _legend_labels(d, methods, axis is None)
        if axis is None:
            ax.set_xlabel("poison ratio")
            ax.set_ylabel(f"{label} (%): lower is safer")
            ax.set_title(f"{label} vs poison ratio (no utility measure)", fontsize=10)
        else:
            ax.set_xlabel(f"{label} (%): lower is safer")
            ax.set_ylabel(f"{axis[1]}: higher is more useful")
            ax.set_title(f"Safety ({label}) vs utility; marker size: poison ratio", fontsize=10)
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=styles[m][0], marker=styles[m][1], linestyle="", markersize=7, label=labels.get(m, m))
        for m in methods
    ]
    if axis is not None:
        handles += [Line2D([], [], linestyle="", label="")] + [
            Line2D([], [], color="0.5", marker="o", linestyle="", markersize=math.sqrt(a), label=f"P={r:g}")
            for r, a in sizes.items()
        ]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.795, 0.92), fontsize=8, frameon=False)
    # Which way is better, beside the panels (inside them it would cover the points that matter most).
    tail, head = ((0.835, 0.1), (0.805, 0.17)) if axis is not None else ((0.815, 0.17), (0.815, 0.1))
    fig.add_artist(
        FancyArrowPatch(tail, head, transform=fig.transFigure, arrowstyle="-|>", mutation_scale=12, color="0.2")
    )
    better = "safer and more useful:\nlow ASR, high utility" if axis is not None else "safer: low ASR"
    fig.text(0.845, 0.135, better, fontsize=8, va="center", ha="left", color="0.2")
    note = (
        "Error bars: 95 % interval over seeds (cells with two or more seeds). Methods at one place stand side by side."
    )
    if axis is not None and axis[1] != "task accuracy (%)":
        note += " The win rate has no seed interval here (the report's win-rate table gives its prompt interval)."
    fig.text(0.06, 0.015, note, fontsize=7, color="0.35")
    return fig, None if axis is None else axis[1]


def plot_safety_utility(
    summary: pd.DataFrame,
    out_png: str,
    llm: pd.DataFrame | None = None,
    by_method: pd.DataFrame | None = None,
) -> str | None:
    """Each ASR against utility (:func:`utility_axis`), with the seed intervals of ``by_method``
    (``results/summary_by_method.csv``) as error bars; with no utility measure, each ASR against the poison ratio.
    Writes the same bytes for the same inputs (default style, no software tag). Returns the utility axis label
    (None: no utility axis)."""
    import matplotlib.style

    with matplotlib.style.context("default"):  # the user's matplotlibrc would change the bytes
        fig, label = safety_figure(summary, llm, by_method)
        import matplotlib.pyplot as plt

        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, dpi=120, format="png", metadata={"Software": None})
        plt.close(fig)
    return label
