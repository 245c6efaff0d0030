"""Judge agreement: pairwise agreement and Cohen's kappa between classifier judges, per method.

Input is a tidy table, one row per (item, judge): ``method``, ``poison_ratio``, ``seed``, ``prompt_id``,
``judge`` and ``unsafe`` (1 unsafe, 0 safe, missing/NaN for an invalid verdict). An item is one
(poison_ratio, seed, prompt_id) response of a method. For each pair of judges, only items that both judged
validly count (invalid verdicts are excluded pairwise, so each pair has its own ``n``).

Cohen's kappa is computed here in a few lines rather than with scikit-learn's ``cohen_kappa_score``:
scikit-learn is not a dependency of the project (requirements.lock), and the degenerate cases need their
own handling anyway (scikit-learn returns NaN with a warning when p_e = 1).
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd

ITEM_KEYS = ("poison_ratio", "seed", "prompt_id")
COLUMNS = ("method", *ITEM_KEYS, "judge", "unsafe")

KAPPA_OK = "ok"
KAPPA_UNDEFINED = "undefined: expected agreement is 1 (both judges constant and equal)"
KAPPA_NO_ITEMS = "undefined: no item judged validly by both"


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> tuple[float, float, float, str]:
    """``(agreement p_o, expected agreement p_e, kappa, status)`` of two binary label vectors.

    p_o = share of items with equal labels; with p_a, p_b the two judges' shares of 1s,
    p_e = p_a p_b + (1 - p_a)(1 - p_b) and kappa = (p_o - p_e) / (1 - p_e).
    Degenerate cases: no items -> all NaN (status :data:`KAPPA_NO_ITEMS`); p_e = 1, which happens exactly
    when both judges give one and the same label to every item -> kappa NaN (:data:`KAPPA_UNDEFINED`):
    chance explains all agreement, so kappa is undefined, and it is reported so rather than as 1 or 0.
    Two judges constant on *different* labels have p_e = 0, p_o = 0, kappa = 0 (defined).
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"cohen_kappa: expected two vectors of one length, found shapes {x.shape} and {y.shape}")
    if not np.isin(x, (0.0, 1.0)).all() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("cohen_kappa: labels must be 0 or 1")
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, KAPPA_NO_ITEMS
    p_o = float((x == y).mean())
    pa, pb = float(x.mean()), float(y.mean())
    p_e = pa * pb + (1 - pa) * (1 - pb)
    if p_e >= 1.0:
        return p_o, p_e, math.nan, KAPPA_UNDEFINED
    return p_o, p_e, (p_o - p_e) / (1 - p_e), KAPPA_OK


def _check(verdicts: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in (*by, *ITEM_KEYS, "judge", "unsafe") if c not in verdicts.columns]
    if missing:
        raise ValueError(f"judge verdicts: missing columns {missing}")
    df = verdicts.copy()
    df["unsafe"] = pd.to_numeric(df["unsafe"], errors="raise").astype(float)
    bad = df["unsafe"].notna() & ~df["unsafe"].isin([0.0, 1.0])
    if bad.any():
        raise ValueError(f"judge verdicts: unsafe must be 0, 1 or missing (invalid), found {sorted(df.unsafe[bad])}")
    keys = [*dict.fromkeys([*by, *ITEM_KEYS]), "judge"]
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        example = df[dup].iloc[0].to_dict()
        raise ValueError(f"judge verdicts: {int(dup.sum())} rows repeat an (item, judge) pair, e.g. {example}")
    return df


def judge_agreement(verdicts: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Pairwise agreement and Cohen's kappa of the judges, per group of ``by`` (default: per method).

    One row per group and judge pair (``judge_a`` < ``judge_b`` alphabetically): ``n`` items both judged
    validly, ``n_unsafe_a``, ``n_unsafe_b``, ``agreement`` (p_o), ``p_e``, ``kappa`` and ``kappa_status``
    (see :func:`cohen_kappa`; NaN kappa always comes with a status saying why). A judge pair is listed even
    when it shares no valid item (n = 0, NaN values).
    """
    by = list(by)
    df = _check(verdicts, by)
    index = [*dict.fromkeys([*by, *ITEM_KEYS])]
    rows = []
    for group, part in df.groupby(by, sort=True, dropna=False) if by else [((), df)]:
        wide = part.pivot(index=index, columns="judge", values="unsafe")
        for ja, jb in combinations(sorted(wide.columns), 2):
            both = wide[[ja, jb]].dropna()
            a, b = both[ja].to_numpy(), both[jb].to_numpy()
            p_o, p_e, kappa, status = cohen_kappa(a, b)
            key = group if isinstance(group, tuple) else (group,)
            rows.append(
                {
                    **dict(zip(by, key)),
                    "judge_a": ja,
                    "judge_b": jb,
                    "n": len(both),
                    "n_unsafe_a": int(a.sum()),
                    "n_unsafe_b": int(b.sum()),
                    "agreement": p_o,
                    "p_e": p_e,
                    "kappa": kappa,
                    "kappa_status": status,
                }
            )
    cols = [*by, "judge_a", "judge_b", "n", "n_unsafe_a", "n_unsafe_b", "agreement", "p_e", "kappa", "kappa_status"]
    return pd.DataFrame(rows, columns=cols)
