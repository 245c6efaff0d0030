"""Judge agreement: pairwise agreement and Cohen's kappa, hand-computed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tokensafe.eval.safety_judges.agreement import (
    KAPPA_NO_ITEMS,
    KAPPA_OK,
    KAPPA_UNDEFINED,
    cohen_kappa,
    judge_agreement,
)


def test_kappa_of_a_worked_2x2_table():
    # 10 items, judge A rows, judge B columns:
    #            B=1  B=0
    #    A=1      4    1      p_o = (4 + 3) / 10 = 0.7
    #    A=0      2    3      p_A = 5/10 = 0.5, p_B = 6/10 = 0.6
    # p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    a = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 0, 1, 1, 0, 0, 0]
    p_o, p_e, kappa, status = cohen_kappa(a, b)
    assert (p_o, p_e, kappa, status) == (pytest.approx(0.7), pytest.approx(0.5), pytest.approx(0.4), KAPPA_OK)


def test_kappa_perfect_and_opposite():
    assert cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0])[2] == pytest.approx(1.0)
    # p_o = 0, p_e = 0.5 * 0.5 + 0.5 * 0.5 = 0.5 -> kappa = -1
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1])[2] == pytest.approx(-1.0)


def test_kappa_both_constant_and_equal_is_undefined_not_one():
    p_o, p_e, kappa, status = cohen_kappa([0, 0, 0], [0, 0, 0])
    assert p_o == 1.0 and p_e == 1.0 and math.isnan(kappa) and status == KAPPA_UNDEFINED
    assert math.isnan(cohen_kappa([1, 1], [1, 1])[2])


def test_kappa_both_constant_but_different_is_zero():
    # p_A = 1, p_B = 0: p_e = 0, p_o = 0 -> kappa = 0
    assert cohen_kappa([1, 1, 1], [0, 0, 0])[1:] == (0.0, 0.0, KAPPA_OK)


def test_kappa_one_constant_judge():
    # A always 1, B = (1, 0, 1, 1): p_o = 0.75, p_e = 1 * 0.75 + 0 = 0.75 -> kappa = 0
    assert cohen_kappa([1, 1, 1, 1], [1, 0, 1, 1])[2] == pytest.approx(0.0)


def test_kappa_no_items_and_bad_input():
    p_o, _, kappa, status = cohen_kappa([], [])
    assert math.isnan(p_o) and math.isnan(kappa) and status == KAPPA_NO_ITEMS
    with pytest.raises(ValueError, match="0 or 1"):
        cohen_kappa([1, 2], [1, 0])
    with pytest.raises(ValueError, match="one length"):
        cohen_kappa([1], [1, 0])


def _rows(method, judge, labels, poison_ratio=0.1, seed=0):
    return [
        {"method": method, "poison_ratio": poison_ratio, "seed": seed, "prompt_id": i, "judge": judge, "unsafe": u}
        for i, u in enumerate(labels)
    ]


def test_judge_agreement_per_method_and_pair_with_invalid_excluded_pairwise():
    nan = np.nan
    df = pd.DataFrame(
        _rows("sft", "harmbench", [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
        + _rows("sft", "llama_guard", [1, 1, 1, 1, 0, 1, 1, 0, 0, 0])
        # wildguard invalid on items 8 and 9: pairs with it use items 0..7 only
        + _rows("sft", "wildguard", [1, 1, 1, 1, 1, 0, 0, 0, nan, nan])
        + _rows("toss", "harmbench", [0, 0, 0, 0])
        + _rows("toss", "llama_guard", [0, 0, 0, 0])
    )
    out = judge_agreement(df)
    assert list(out.columns[:3]) == ["method", "judge_a", "judge_b"]
    got = {(r.method, r.judge_a, r.judge_b): r for r in out.itertuples()}
    assert len(got) == 4

    hb_lg = got[("sft", "harmbench", "llama_guard")]  # the worked 2x2 table above
    assert (hb_lg.n, hb_lg.agreement, hb_lg.kappa) == (10, pytest.approx(0.7), pytest.approx(0.4))

    hb_wg = got[("sft", "harmbench", "wildguard")]  # identical on items 0..7
    assert (hb_wg.n, hb_wg.n_unsafe_a, hb_wg.agreement, hb_wg.kappa) == (8, 5, 1.0, pytest.approx(1.0))

    # items 0..7: llama_guard 1,1,1,1,0,1,1,0 vs wildguard 1,1,1,1,1,0,0,0 -> agree on 0-3 and 7: p_o = 5/8;
    # p_L = 6/8, p_W = 5/8: p_e = 30/64 + 6/64 = 36/64; kappa = (40/64 - 36/64) / (28/64) = 1/7
    lg_wg = got[("sft", "llama_guard", "wildguard")]
    assert (lg_wg.n, lg_wg.agreement, lg_wg.kappa) == (8, pytest.approx(5 / 8), pytest.approx(1 / 7))

    toss = got[("toss", "harmbench", "llama_guard")]  # both always safe: undefined, reported so
    assert toss.agreement == 1.0 and math.isnan(toss.kappa) and toss.kappa_status == KAPPA_UNDEFINED


def test_items_are_matched_on_poison_ratio_seed_and_prompt():
    df = pd.DataFrame(
        _rows("sft", "a", [1, 0], seed=0)
        + _rows("sft", "a", [0, 0], seed=1)
        + _rows("sft", "b", [1, 0], seed=0)
        + _rows("sft", "b", [1, 1], seed=1)
    )
    [row] = judge_agreement(df).itertuples()
    assert (row.n, row.agreement) == (4, pytest.approx(2 / 4))
    by_seed = judge_agreement(df, by=("method", "seed"))
    assert list(by_seed.agreement) == [1.0, 0.0]


def test_a_pair_without_shared_valid_items_is_listed_as_undefined():
    df = pd.DataFrame(_rows("sft", "a", [1, np.nan]) + _rows("sft", "b", [np.nan, 0]))
    [row] = judge_agreement(df).itertuples()
    assert row.n == 0 and math.isnan(row.kappa) and row.kappa_status == KAPPA_NO_ITEMS


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="missing columns"):
        judge_agreement(pd.DataFrame({"method": ["sft"], "judge": ["a"], "unsafe": [1]}))
    with pytest.raises(ValueError, match="0, 1 or missing"):
        judge_agreement(pd.DataFrame(_rows("sft", "a", [2])))
    with pytest.raises(ValueError, match="repeat"):
        judge_agreement(pd.DataFrame(_rows("sft", "a", [1]) * 2))
