"""Interval arithmetic and noise verdicts (tokensafe.eval.statistics.stats), against hand-computed values."""

import math

import numpy as np
import pytest

from tokensafe.eval.statistics.stats import (
    FEW_SEEDS,
    HIGHER,
    LOWER,
    NOISE,
    cell,
    paired_difference,
    paired_seed_difference,
    prompt_interval,
    seed_interval,
    verdict,
    wilson_interval,
)

T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (3 seeds)
T_975_1 = 12.706204736174698  # 1 degree of freedom (2 seeds)


def test_seed_interval_is_the_t_interval_of_the_mean():
    lo, hi = seed_interval([0.5, 0.7, 0.6])
    half = T_975_2 * 0.1 / math.sqrt(3)  # sd (ddof 1) = 0.1
    assert lo == pytest.approx(0.6 - half, abs=1e-9) and hi == pytest.approx(
        0.6 + half, abs=1e-9
    )  # sd is 0.1 up to rounding
    lo, hi = seed_interval([0.5, 0.75], bounds=(-10, 10))
    assert (lo, hi) == pytest.approx((0.625 - T_975_1 * 0.125, 0.625 + T_975_1 * 0.125), abs=1e-12)


def test_seed_interval_needs_two_seeds_and_is_a_point_without_spread():
    assert all(math.isnan(x) for x in seed_interval([0.4]))
    assert seed_interval([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3), abs=1e-15)


def test_seed_interval_is_clipped_to_the_range_of_a_rate_or_a_difference():
    assert seed_interval([0.6, 0.9, 1.0])[1] == 1.0
    assert seed_interval([-0.9, -1.0, -0.6], bounds=(-1.0, 1.0))[0] == -1.0


def test_wilson_interval_by_hand():
    # z = 1.959964; 50 % of 100: centre 0.5, half-width z * sqrt(0.0025 + z^2 / 40000) / (1 + z^2 / 100)
    lo, hi = wilson_interval(0.5, 100)
    assert (lo, hi) == pytest.approx((0.403832, 0.596168), abs=1e-6)
    # 0 of 100 is not certainty: the upper end is (z^2 / 100) / (1 + z^2 / 100) = 0.038415 / 1.038415 = 0.036993
    assert wilson_interval(0.0, 100) == pytest.approx((0.0, 0.036993), abs=1e-6)
    assert wilson_interval(1.0, 4) == pytest.approx((0.510109, 1.0), abs=1e-6)
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0.5, 0)


def test_prompt_bootstrap_of_two_prompts_spans_every_outcome():
    # Resampling two prompts [1, 0]: the mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so the 2.5 % and
    # 97.5 % quantiles are 0 and 1.
    assert prompt_interval([[1, 0]]) == (0.0, 1.0)
    assert prompt_interval([[1, 1, 1]]) == (1.0, 1.0)


def test_prompt_bootstrap_matches_the_binomial_interval_and_is_deterministic():
    o = np.array([[1] * 50 + [0] * 50], dtype=float)
    lo, hi = prompt_interval(o)
    se = math.sqrt(0.25 / 100)  # normal approximation: 0.5 +- 1.96 * 0.05
    assert abs(lo - (0.5 - 1.96 * se)) < 0.02 and abs(hi - (0.5 + 1.96 * se)) < 0.02
    assert prompt_interval(o) == (lo, hi)
    with pytest.raises(ValueError, match="at least one prompt"):
        prompt_interval(np.zeros((2, 0)))


def test_prompt_bootstrap_resamples_prompts_not_seeds():
    # Seeds that disagree prompt by prompt but have the same mean: over prompts the mean of the seeds is
    # always 0.5 when both seeds see the same resample (0.5 per prompt), so the interval is a point.
    o = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=float)
    assert prompt_interval(o) == (0.5, 0.5)


def test_verdicts():
    assert verdict((0.1, 0.3), (0.05, 0.2), 3) == HIGHER
    assert verdict((-0.3, -0.1), (-0.2, -0.01), 3) == LOWER
    assert verdict((-0.1, 0.3), (0.05, 0.2), 3) == NOISE  # the seeds do not agree
    assert verdict((0.1, 0.3), (-0.01, 0.2), 3) == NOISE  # the prompts do not
    assert verdict((0.1, 0.3), None, 3) == HIGHER  # seed interval only (mask rows)
    assert verdict((0.1, 0.3), (0.05, 0.2), 1) == FEW_SEEDS


def test_cell_and_paired_difference():
    a = np.ones((3, 4))
    b = np.zeros((3, 4))
    c = cell(a)
    assert (c["n_seeds"], c["n_prompts"], c["mean"]) == (3, 4, 1.0)
    assert (c["prompt_ci_low"], c["prompt_ci_high"]) == pytest.approx(wilson_interval(1.0, 4))
    d = paired_difference(a, b)
    assert d["mean"] == 1.0 and (d["seed_ci_low"], d["prompt_ci_low"]) == (1.0, 1.0) and d["verdict"] == HIGHER
    same = paired_difference(a, a)
    assert same["mean"] == 0.0 and same["verdict"] == NOISE
    assert paired_difference(a[:1], a[:1])["verdict"] == FEW_SEEDS
    with pytest.raises(ValueError, match="same \\[seeds, prompts\\] shape"):
        paired_difference(a, b[:2])


def test_paired_seed_difference_has_no_prompt_interval():
    d = paired_seed_difference([0.97, 0.99, 0.985], [0.96, 0.97, 0.98])  # differences 0.01, 0.02, 0.005
    half = T_975_2 * np.std([0.01, 0.02, 0.005], ddof=1) / math.sqrt(3)
    assert d["mean"] == pytest.approx(0.035 / 3) and d["seed_ci_low"] == pytest.approx(0.035 / 3 - half)
    assert math.isnan(d["prompt_ci_low"]) and d["verdict"] == NOISE  # 0.0117 +- 0.019 includes 0
