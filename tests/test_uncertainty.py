"""Aggregates over seeds and the key comparisons (tokensafe.eval.statistics.uncertainty), and their report tables."""

import math

import pandas as pd
import pytest

from tokensafe.eval.statistics.stats import wilson_interval
from tokensafe.eval.statistics.uncertainty import by_method, comparisons, method_pairs, outcome_matrix
from tokensafe.stages.report import comparisons_section, interval_section

T_975_1 = 12.706204736174698


def outcomes(rows):
    """rows: (method, ratio, seed, metric, [values per prompt])."""
    out = []
    for method, ratio, seed, metric, values in rows:
        out += [
            {"method": method, "poison_ratio": ratio, "seed": seed, "metric": metric, "prompt_id": i, "value": float(v)}
            for i, v in enumerate(values)
        ]
    return pd.DataFrame(out)


OUT = outcomes(
    [
        ("initial", 0.1, 1, "asr_keyword", [0, 0, 0, 0]),
        ("initial", 0.1, 2, "asr_keyword", [0, 0, 0, 0]),
        ("sft", 0.1, 1, "asr_keyword", [1, 1, 0, 0]),
        ("sft", 0.1, 2, "asr_keyword", [1, 1, 1, 0]),
        ("toss", 0.1, 1, "asr_keyword", [0, 0, 0, 0]),
        ("toss", 0.1, 2, "asr_keyword", [0, 0, 0, 0]),
        ("sft", 0.0, 1, "asr_keyword", [0, 0, 0, 0]),
        ("initial", 0.0, 1, "asr_keyword", [0, 0, 0, 0]),
    ]
)


def test_by_method_gives_the_mean_over_seeds_with_both_intervals():
    agg = by_method(OUT)
    sft = agg[(agg.method == "sft") & (agg.poison_ratio == 0.1)].iloc[0]
    assert (sft.n_seeds, sft.n_prompts, sft["mean"]) == (2, 4, 0.625)  # seeds 0.5 and 0.75
    # sd 0.1768 / sqrt 2 = 0.125: 0.625 +- 12.7 * 0.125, clipped to the range of a rate
    assert (sft.seed_ci_low, sft.seed_ci_high) == (0.0, 1.0) and 0.625 + T_975_1 * 0.125 > 1
    assert (sft.prompt_ci_low, sft.prompt_ci_high) == pytest.approx(wilson_interval(0.625, 4))
    toss = agg[(agg.method == "toss")].iloc[0]
    assert (
        toss["mean"] == 0.0
        and toss.prompt_ci_high == pytest.approx(wilson_interval(0.0, 4)[1])
        and toss.prompt_ci_high > 0.4
    )
    one = agg[(agg.method == "sft") & (agg.poison_ratio == 0.0)].iloc[0]
    assert one.n_seeds == 1 and math.isnan(one.seed_ci_low)


def test_pairs_are_defences_vs_sft_and_everything_vs_initial():
    assert method_pairs(OUT) == [
        ("sft", "initial", 0.0),
        ("toss", "sft", 0.1),
        ("sft", "initial", 0.1),
        ("toss", "initial", 0.1),
    ]


def test_comparisons_pair_by_seed_and_call_the_verdict():
    comp = comparisons(OUT)
    row = comp[(comp.a == "toss") & (comp.b == "sft")].iloc[0]
    assert row["mean"] == pytest.approx(-0.625) and row.n_seeds == 2
    # Two seeds: per-seed differences -0.5 and -0.75, t-interval -0.625 +- 12.7 * 0.125 includes 0.
    assert row.verdict == "within noise"
    alone = comp[(comp.b == "initial") & (comp.poison_ratio == 0.0)].iloc[0]
    assert alone.verdict == "needs >= 2 seeds"


def test_the_seeds_must_have_answered_the_same_prompts():
    bad = outcomes([("sft", 0.1, 1, "accuracy", [1, 0]), ("sft", 0.1, 2, "accuracy", [1, 0, 1])])
    with pytest.raises(ValueError, match="sft at P=0.1, accuracy: the seeds answered different prompts"):
        outcome_matrix(bad, "sft", 0.1, "accuracy")


def test_toss_pro_vs_toss_compares_the_last_round_with_round_0():
    masks = [
        {"poison_ratio": 0.1, "seed": s, "round": r, "poison_precision": p, "poison_recall": 0.6}
        for s, r, p in [
            (1, 0, 0.96),
            (1, 2, 0.97),
            (2, 0, 0.97),
            (2, 2, 0.99),
            (3, 0, 0.98),
            (3, 2, 0.985),
            (1, 1, 0.5),
            (2, 1, 0.5),
            (3, 1, 0.5),
        ]
    ]
    comp = comparisons(OUT, masks)
    prec = comp[comp.metric == "mask_precision"].iloc[0]
    assert (prec.a, prec.b, prec.n_seeds) == ("toss_pro (round 2)", "toss (round 0)", 3)
    assert prec["mean"] == pytest.approx(0.035 / 3) and prec.verdict == "within noise"
    assert comp[comp.metric == "mask_recall"].iloc[0]["mean"] == pytest.approx(0.0)


def test_report_tables_show_intervals_and_verdicts():
    text = interval_section(by_method(OUT))
    assert "**ASR-kw**" in text and "| sft | 0.0 [-] (0.0, 49.0) n=1 | 62.5 [0.0, 100.0] (21.9, 90.8) n=2 |" in text
    comp = comparisons_section(comparisons(OUT))
    assert "| toss | sft | 0.1 | ASR-kw | 2 | -62.5 |" in comp and "within noise" in comp
    assert "| sft | initial | 0 |" not in comp and "single seed, so no verdict" in comp and "sft vs initial" in comp
