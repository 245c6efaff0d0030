"""Uncertainty of the results: 95 % intervals over seeds and over prompts, and noise verdicts for pairs.

Two sources of noise are reported separately, because they answer different questions:

* **over seeds** - how much a method's number moves when the fine-tuning set's mix, the LoRA
  initialisation and the data order change: a Student-t interval of the mean over seeds
  (``mean +- t_{0.975, n-1} * sd / sqrt(n)``, sd with ddof 1); undefined for one seed;
* **over prompts** - how much it would move on another draw of evaluation prompts of the same kind: for a
  cell, the Wilson score interval of its mean rate on ``n_prompts`` prompts (the mean over seeds of rates
  on the same prompts varies no more than one seed's rate; unlike a bootstrap, Wilson does not collapse
  to a point at 0 % or 100 %); for a difference, a percentile bootstrap that resamples prompt ids (the
  same resample for every seed and both methods) and recomputes the mean difference over seeds.

Intervals of rates are clipped to [0, 1], of differences to [-1, 1].

A difference between two methods at one poison ratio is paired by seed (seed s of both methods trained
on the same fine-tuning set) and by prompt (the same bootstrap resample for both). It is called
*beyond noise* only when both intervals of the difference exclude 0, and a verdict needs at least two
seeds. The bootstrap draws come from a fixed generator, so the same inputs give the same bytes.
"""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0

HIGHER, LOWER, NOISE, FEW_SEEDS = "higher", "lower", "within noise", "needs >= 2 seeds"


def _matrix(outcomes) -> np.ndarray:
    """``[n_seeds, n_prompts]`` as float64, refusing any other shape."""
    o = np.asarray(outcomes, dtype=np.float64)
    if o.ndim != 2 or o.shape[1] == 0:
        raise ValueError(f"outcomes must be [seeds, prompts] with at least one prompt, got shape {o.shape}")
    return o


def seed_interval(
    values, confidence: float = CONFIDENCE, bounds: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (one value per seed), clipped to ``bounds``; (nan, nan)
    for fewer than 2 seeds."""
    from scipy import stats  # here, not at import: the Snakefile imports this package's table modules

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(max(bounds[0], x.mean() - half)), float(min(bounds[1], x.mean() + half))


def wilson_interval(rate: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a rate observed on ``n`` trials. Written out (a textbook formula) because
    scipy's ``binomtest(...).proportion_ci`` needs an integer count and a mean over seeds is not one."""
    from scipy import stats

    if n < 1:
        raise ValueError(f"wilson_interval needs at least one trial, got n = {n}")
    z = stats.norm.ppf(0.5 + confidence / 2)
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def prompt_interval(
    outcomes, confidence: float = CONFIDENCE, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap over prompts of the mean over seeds of the per-seed mean outcome.

    ``outcomes``: ``[n_seeds, n_prompts]`` (0/1 outcomes, or paired differences of them), column j being
    the same prompt in every row."""
    o = _matrix(outcomes)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, o.shape[1], size=(n_boot, o.shape[1]))
    boot = o[:, idx].mean(axis=2).mean(axis=0)  # [n_boot]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return float(low), float(high)


def verdict(seed_ci: tuple[float, float], prompt_ci: tuple[float, float] | None, n_seeds: int) -> str:
    """'higher' / 'lower' when every interval given excludes 0 on the same side; else 'within noise'."""
    if n_seeds < 2:
        return FEW_SEEDS
    intervals = [seed_ci] + ([prompt_ci] if prompt_ci is not None else [])
    if all(lo > 0 for lo, _ in intervals):
        return HIGHER
    if all(hi < 0 for _, hi in intervals):
        return LOWER
    return NOISE


def cell(outcomes) -> dict:
    """Mean rate over seeds with both intervals, from ``[n_seeds, n_prompts]`` 0/1 outcomes."""
    o = _matrix(outcomes)
    per_seed = o.mean(axis=1)
    s_lo, s_hi = seed_interval(per_seed)
    p_lo, p_hi = wilson_interval(float(per_seed.mean()), o.shape[1])
    return {
        "n_seeds": int(o.shape[0]),
        "n_prompts": int(o.shape[1]),
        "mean": float(per_seed.mean()),
        "seed_ci_low": s_lo,
        "seed_ci_high": s_hi,
        "prompt_ci_low": p_lo,
        "prompt_ci_high": p_hi,
    }


def paired_difference(a, b) -> dict:
    """A minus B, paired by seed (rows) and prompt (columns), with both intervals and the verdict."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have the same [seeds, prompts] shape, got {a.shape} and {b.shape}")
    d = a - b
    per_seed = d.mean(axis=1)
    s_lo, s_hi = seed_interval(per_seed, bounds=(-1.0, 1.0))
    p_lo, p_hi = prompt_interval(d)
    out = {
        "n_seeds": int(d.shape[0]),
        "n_prompts": int(d.shape[1]),
        "mean": float(per_seed.mean()),
        "seed_ci_low": s_lo,
        "seed_ci_high": s_hi,
        "prompt_ci_low": p_lo,
        "prompt_ci_high": p_hi,
    }
    out["verdict"] = verdict(
        (out["seed_ci_low"], out["seed_ci_high"]), (out["prompt_ci_low"], out["prompt_ci_high"]), out["n_seeds"]
    )
    return out


def paired_seed_difference(a, b) -> dict:
    """A minus B for one number per seed (no prompt dimension, e.g. a mask's precision): seed interval only."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    lo, hi = seed_interval(d, bounds=(-1.0, 1.0))
    return {
        "n_seeds": int(d.size),
        "mean": float(d.mean()),
        "seed_ci_low": lo,
        "seed_ci_high": hi,
        "prompt_ci_low": math.nan,
        "prompt_ci_high": math.nan,
        "verdict": verdict((lo, hi), None, int(d.size)),
    }
