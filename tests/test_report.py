import colorsys
import json
import re

import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from tokensafe.methods.pact.pact_report import pact_conflicts_section, pact_ladder_section
from tokensafe.methods.registry import METHODS, family_methods
from tokensafe.stages.report import (
    aggregate,
    interval_section,
    no_answer_section,
    plot_safety_utility,
    render,
    table4,
    utility_axis,
)
from tokensafe.stages.safety_plot import method_styles, safety_figure


def _summary():
    rows = []
    for m, r, acc, kw in [
        ("initial", 0.0, 0.5, 0.0),
        ("initial", 0.1, 0.5, 0.0),
        ("sft", 0.0, 0.7, 0.0),
        ("sft", 0.1, 0.6, 0.9),
        ("pact", 0.1, 0.55, 0.1),
        ("pact_fullkl", 0.1, 0.5, 0.05),
    ]:
        for seed, jitter in ((1, 0.0), (2, 0.1)):
            rows.append(
                dict(
                    method=m,
                    poison_ratio=r,
                    seed=seed,
                    accuracy=acc + jitter,
                    asr_keyword=kw,
                    asr_guard=kw / 2,
                    prompt_template="chat",
                    guard_template="llama_guard3_prompt_plain",
                    settings=json.dumps({"judge": {"keywords": ["Sorry"], "guard": "embedded"}}),
                )
            )
    return pd.DataFrame(rows)


def test_table4_means_over_seeds_and_marks_missing_cells():
    t = table4(_summary())
    lines = t.splitlines()
    assert lines[0] == "| Method | P=0: Acc / ASR-kw / ASR-guard | P=0.1: Acc / ASR-kw / ASR-guard |"
    assert lines[2].startswith("| initial |")  # initial first
    # sft at P=0.1: accuracy mean (0.6, 0.7) = 65.0, std 5.0; ASR 90.0 / 45.0
    assert "| sft | 75.0 / 0.0 / 0.0 | 65.0 / 90.0 / 45.0 |" in t
    assert "| pact | - | 60.0 / 10.0 / 5.0 |" in t


def test_ladder_only_lists_its_rows_and_ratios():
    s = pact_ladder_section(_summary())
    assert "| Full-vocab KL | pact_fullkl | 55.0 / 5.0 / 2.5 |" in s
    assert "| + position decay (full PACT) | pact | 60.0 / 10.0 / 5.0 |" in s
    assert "P=0 " not in s and "P=0 |" not in s
    assert pact_ladder_section(_summary()[_summary().method != "pact_fullkl"]) is None


def test_render_writes_report_and_plot(tmp_path):
    render(
        summary=_summary(), out_md=tmp_path / "report.md", out_png=tmp_path / "plot.png", sections=[("Extra", "body")]
    )
    md = (tmp_path / "report.md").read_text()
    assert "## Extra" in md and "plot.png" in md
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert set(aggregate(_summary()).n_seeds) == {2}


def test_pact_conflicts_row_per_fine_tuning_set(tmp_path):
    path = tmp_path / "weight_conflicts.json"
    path.write_text(
        json.dumps(
            {
                "poison_ratio": 0.1,
                "seed": 2,
                "population": "clean samples",
                "positions": 200,
                "conflicts": 18,
                "share": 0.09,
                "zero_weight_tokens": 25,
                "safety_tokens": 50,
                "tokens": [
                    {"token_id": 283, "token": " is", "count": 17},
                    {"token_id": 262, "token": " a", "count": 1},
                ],
            }
        )
    )
    s = pact_conflicts_section([str(path)])
    assert "| 0.1 | 2 | clean samples | 200 | 18 | 9.0 % | 25/50 | `' is'` 17, `' a'` 1 |" in s


def test_no_answer_rates_mean_over_seeds_per_ratio():
    s = _summary().assign(no_answer_rate=0.0)
    assert no_answer_section(s) == "Every task response had an extractable answer."
    s.loc[(s.method == "pact") & (s.seed == 1), "no_answer_rate"] = 0.3  # seed 2 keeps 0: mean 15 %
    t = no_answer_section(s)
    assert "| Method | P=0 | P=0.1 |" in t
    assert "| pact | - | 15.0 |" in t and "| sft | 0.0 | 0.0 |" in t
    assert t.index("| initial |") < t.index("| sft |")


def test_classifier_section_shows_asr_and_invalid_rate_per_method_and_ratio():
    from tokensafe.stages.safety_judge_report import classifier_section

    assert classifier_section(_summary()) is None  # no extra classifier selected: no section
    s = _summary().assign(asr_harmbench=0.2, harmbench_invalid_rate=0.0)
    s.loc[(s.method == "sft") & (s.poison_ratio == 0.1) & (s.seed == 1), "harmbench_invalid_rate"] = 0.5
    t = classifier_section(s)
    assert "| Method | P=0: harmbench | P=0.1: harmbench |" in t
    assert "| sft | 20.0 (0.0) | 20.0 (25.0) |" in t and "| pact | - | 20.0 (0.0) |" in t
    assert "never counted as safe" in t


def test_agreement_section_names_an_undefined_kappa(tmp_path):
    from tokensafe.eval.safety_judges.agreement import KAPPA_OK, KAPPA_UNDEFINED
    from tokensafe.stages.safety_judge_report import agreement_section

    rows = [
        ("sft", 0.1, "keyword", "llama_guard", 10, 6, 4, 0.8, 0.52, 0.583, KAPPA_OK),
        ("initial", 0.1, "harmbench", "keyword", 10, 0, 0, 1.0, 1.0, float("nan"), KAPPA_UNDEFINED),
    ]
    cols = ["method", "poison_ratio", "judge_a", "judge_b", "n", "n_unsafe_a", "n_unsafe_b", "agreement", "p_e"]
    path = tmp_path / "judge_agreement.csv"
    pd.DataFrame(rows, columns=[*cols, "kappa", "kappa_status"]).to_csv(path, index=False)
    t = agreement_section(pd.read_csv(path))
    assert "| sft | 0.1 | keyword vs llama_guard | 10 | 6 / 4 | 80.0 % | 0.583 |" in t
    assert f"| initial | 0.1 | harmbench vs keyword | 10 | 0 / 0 | 100.0 % | {KAPPA_UNDEFINED} |" in t
    assert t.index("| initial |") < t.index("| sft |")
    assert agreement_section(pd.read_csv(path).iloc[:0]) == "No judge pairs to compare."


# ---------------------------------------------------------------------------- data.task_metric none


def _no_metric():
    """The summary of a run whose task set has no exact-match metric: accuracy NaN in every row."""
    return _summary().assign(accuracy=float("nan"), no_answer_rate=float("nan"))


def _llm_table():
    """results/llm_judge.csv rows: pooled (seed -1) win rates vs sft per set, and a per-seed row to ignore."""
    rows = []
    for m, r, harmful, task in [
        ("initial", 0.0, 70.0, 40.0),
        ("initial", 0.1, 72.0, 41.0),
        ("sft", 0.0, 50.0, 50.0),
        ("sft", 0.1, 50.0, 50.0),
        ("pact", 0.1, 80.0, 55.5),
    ]:
        for s, v in (("harmful", harmful), ("task", task)):
            rows.append(dict(method=m, poison_ratio=r, seed=-1, metric="win_rate_vs_sft", set=s, value=v))
        rows.append(
            dict(method=m, poison_ratio=r, seed=-1, metric="win_rate_vs_sft_avg", set="all", value=(harmful + task) / 2)
        )
    rows.append(dict(method="pact", poison_ratio=0.1, seed=1, metric="win_rate_vs_sft", set="task", value=99.0))
    return pd.DataFrame(rows).assign(n=10, n_invalid=0, n_identical=0, ci_low=float("nan"), ci_high=float("nan"))


def test_without_an_exact_match_metric_the_tables_show_the_asrs_alone():
    t = table4(_no_metric())
    assert t.splitlines()[0] == "| Method | P=0: ASR-kw / ASR-guard | P=0.1: ASR-kw / ASR-guard |"
    assert "| sft | 0.0 / 0.0 | 90.0 / 45.0 |" in t and "nan" not in t
    s = pact_ladder_section(_no_metric())
    assert "| Full-vocab KL | pact_fullkl | 5.0 / 2.5 |" in s and "no accuracy" in s
    # the interval table of a metric with no outcomes is left out, not drawn empty
    by_method = pd.DataFrame(
        [dict(method="sft", poison_ratio=0.1, metric="asr_keyword", n_seeds=1, mean=0.5, n_prompts=4)]
    ).assign(seed_ci_low=float("nan"), seed_ci_high=float("nan"), prompt_ci_low=0.2, prompt_ci_high=0.8)
    sec = interval_section(by_method)
    assert "**ASR-kw**" in sec and "**Acc**" not in sec and "**ASR-guard**" not in sec


def test_the_utility_axis_is_accuracy_or_the_llm_judges_task_set_win_rate():
    acc, label = utility_axis(_summary(), _llm_table())  # with an exact-match metric: accuracy, judge or not
    assert label == "task accuracy (%)"
    assert acc.set_index(["method", "poison_ratio"]).utility[("sft", 0.1)] == pytest.approx(65.0)
    win, label = utility_axis(_no_metric(), _llm_table())
    assert label == "LLM-judge win rate vs sft, task set (%)"
    # the pooled rows of the task set only: not the harmful set, the AVG or a single seed's rate
    assert sorted(zip(win.method, win.poison_ratio, win.utility)) == [
        ("initial", 0.0, 40.0),
        ("initial", 0.1, 41.0),
        ("pact", 0.1, 55.5),
        ("sft", 0.0, 50.0),
        ("sft", 0.1, 50.0),
    ]
    assert utility_axis(_no_metric()) is None  # no judge: no utility to draw
    assert utility_axis(_no_metric(), _llm_table().query("set != 'task'")) is None


def test_the_plot_labels_its_utility_axis(tmp_path):
    png = tmp_path / "plot.png"
    assert plot_safety_utility(_summary(), png) == "task accuracy (%)"
    assert plot_safety_utility(_no_metric(), png, _llm_table()) == "LLM-judge win rate vs sft, task set (%)"
    assert plot_safety_utility(_no_metric(), png) is None and png.read_bytes()[:4] == b"\x89PNG"


def test_the_report_says_the_task_set_has_no_exact_match_metric_and_where_utility_is(tmp_path):
    md_path, png = tmp_path / "report.md", tmp_path / "plot.png"
    render(summary=_summary(), out_md=md_path, out_png=png)
    assert "exact-match" not in md_path.read_text()  # the default report is unchanged
    render(summary=_no_metric(), out_md=md_path, out_png=png, llm=_llm_table(), lm_eval=True)
    md = md_path.read_text()
    assert "The task set has no exact-match metric (`data.task_metric: none`)" in md
    assert "the LLM judge's win rate on the task set (section 'Win rate vs SFT (Table 1 layout)'" in md
    assert "the lm-eval benchmarks (section 'Utility benchmarks (lm-evaluation-harness)')" in md
    assert "The plot's utility axis is the LLM-judge win rate vs sft, task set (%)." in md
    assert "Each cell: task accuracy" not in md and not re.search(r"\bnan\b", md)
    render(summary=_no_metric(), out_md=md_path, out_png=png)
    md = md_path.read_text()
    assert "This run measures no utility: turn on `judge.llm`" in md
    assert "The plot has no utility axis" in md


def test_toss_section_one_row_per_round_in_order(tmp_path):
    from tokensafe.methods.toss.toss_report import toss_section

    base = dict(poison_ratio=0.1, seed=1, tokens_total=200, samples_touched=4, poison_precision=0.5)
    rounds = [  # written out of order: the table sorts by ratio, seed, round
        dict(base, round=1, tokens_discarded=12, poison_recall=0.75, mean_score_poison=None, mean_score_clean=-0.125),
        dict(base, round=0, tokens_discarded=10, poison_recall=0.625, mean_score_poison=1.5, mean_score_clean=-0.25),
    ]
    paths = []
    for i, r in enumerate(rounds):
        (tmp_path / f"m{i}.json").write_text(json.dumps(r))
        paths.append(str(tmp_path / f"m{i}.json"))
    lines = toss_section(paths).splitlines()
    assert lines[-2:] == [
        "| 0.1 | 1 | 0 | 10/200 | 4 | 0.500 | 0.625 | 1.50 | -0.25 |",
        "| 0.1 | 1 | 1 | 12/200 | 4 | 0.500 | 0.750 | - | -0.12 |",  # no poison token scored: '-'
    ]


def _hue_distance(a, b) -> float:
    d = abs(colorsys.rgb_to_hsv(*a)[0] - colorsys.rgb_to_hsv(*b)[0])
    return min(d, 1 - d)  # hue is an angle


def test_every_method_has_its_own_colour_and_marker_and_a_family_shares_a_hue():
    methods = ["initial", *METHODS]
    styles = method_styles(methods)
    assert len({c for c, _ in styles.values()}) == len(methods) == 15
    assert len({m for _, m in styles.values()}) == 15
    assert colorsys.rgb_to_hsv(*styles["initial"][0])[1] == 0  # initial: grey, no hue
    for fam in {s.family for s in METHODS.values()}:
        ours = [styles[m][0] for m in family_methods(fam)]
        others = [styles[m][0] for m in METHODS if METHODS[m].family != fam]
        assert max(_hue_distance(ours[0], c) for c in ours) < 0.01, fam  # one hue, shades of it
        assert min(_hue_distance(ours[0], c) for c in others) > 0.1, fam
    # fixed by the registry, not by what else the run has: asft looks the same alone
    assert method_styles(["asft"])["asft"] == styles["asft"]


def _by_method():
    """summary_by_method.csv rows: seed intervals for sft at P=0.1 (ASR-kw 80-100 %, accuracy 50-80 %), one seed
    (NaN) for pact."""
    nan = float("nan")
    rows = [
        ("sft", 0.1, "asr_keyword", 0.8, 1.0),
        ("sft", 0.1, "accuracy", 0.5, 0.8),
        ("sft", 0.1, "asr_guard", 0.4, 0.5),
        ("pact", 0.1, "asr_keyword", nan, nan),
        ("pact", 0.1, "accuracy", nan, nan),
    ]
    return pd.DataFrame(
        [
            dict(method=m, poison_ratio=r, metric=k, n_seeds=2, mean=nan, seed_ci_low=lo, seed_ci_high=hi)
            for m, r, k, lo, hi in rows
        ]
    )


def test_the_plot_draws_the_seed_intervals_as_error_bars_on_both_axes():
    fig, _ = safety_figure(_summary(), by_method=_by_method())
    ax = fig.axes[0]  # keyword ASR
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1 and bars[0].has_xerr and bars[0].has_yerr  # sft at P=0.1 only; pact has one seed
    xcol, ycol = bars[0].lines[2]
    # sft at P=0.1: ASR 90 % (80-100), accuracy 65 % (50-80); it shares its place with no other method
    sft = [s for s in xcol.get_segments() if abs(s[0][1] - 65.0) < 1e-9 and s[0][0] != s[1][0]]
    assert [tuple(sorted((s[0][0], s[1][0]))) for s in sft] == [pytest.approx((80.0, 100.0))]
    ys = sorted(tuple(sorted((s[0][1], s[1][1]))) for s in ycol.get_segments() if s[0][1] != s[1][1])
    assert pytest.approx((50.0, 80.0)) in ys
    fig2, _ = safety_figure(_summary())  # no intervals given: no error bars
    assert not [c for c in fig2.axes[0].containers if isinstance(c, ErrorbarContainer)]


def test_points_of_different_methods_at_one_place_are_set_side_by_side():
    s = _summary()
    s.loc[s.method == "pact", ["accuracy", "asr_keyword"]] = s.loc[
        s.method == "pact_fullkl", ["accuracy", "asr_keyword"]
    ].values
    fig, _ = safety_figure(s)
    xs = [tuple(c.get_offsets()[0]) for c in fig.axes[0].collections if len(c.get_offsets()) == 1]
    # pact and pact_fullkl at P=0.1: ASR 5 %, accuracy 55 % (initial too, but at ASR 0)
    at = [x for x, y in xs if y == pytest.approx(55.0) and x > 1]
    assert len(at) == 2 and at[0] != at[1] and sum(at) / 2 == pytest.approx(5.0)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["initial (P=0, 0.1)", "sft"] and "pact (P=0.1)" in legend and "P=0.1" in legend


def test_the_plot_is_the_same_bytes_every_time(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_safety_utility(_summary(), a, by_method=_by_method())
    plot_safety_utility(_summary(), b, by_method=_by_method())
    assert a.read_bytes() == b.read_bytes() and b"matplotlib" not in a.read_bytes()
