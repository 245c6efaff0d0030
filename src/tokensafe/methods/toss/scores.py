"""TOSS / TOSS-Pro token scoring and selection (docs/methods.md §1.4, 1.5, 1.7; docs/methods.md §A9, §A12).

Works on long "loss dump" tables, one row per token, as written by
:func:`tokensafe.train.loss_dumps.loss_table`: ``sample_id, position, token_id, loss, is_response``.

* score ``S = L_u - L_h`` (utility-model NLL minus harmful-model NLL); high = risky = discarded;
* selection is over response tokens only; ties are broken by ``(sample_id, position)`` ascending, so
  every mask is a deterministic function of the scores;
* a discarded token stays in the input; only its label becomes ``IGNORE_INDEX`` (:func:`retained_labels`).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import torch

from tokensafe.chat import IGNORE_INDEX
from tokensafe.io import require_columns

KEYS = ["sample_id", "position"]
DUMP_COLUMNS = ["sample_id", "position", "token_id", "loss", "is_response"]


def token_scores(util_loss: np.ndarray | pd.Series, harm_loss: np.ndarray | pd.Series) -> np.ndarray:
    """TOSS score ``S = L_u - L_h`` (float64), elementwise; high means the harmful model likes the token more."""
    u = np.asarray(util_loss, dtype=np.float64)
    h = np.asarray(harm_loss, dtype=np.float64)
    if u.shape != h.shape:
        raise ValueError(f"util_loss and harm_loss must have the same shape, got {u.shape} and {h.shape}")
    return u - h


def merge_loss_dumps(util: pd.DataFrame, harm: pd.DataFrame) -> pd.DataFrame:
    """Join the utility and harmful loss dumps on ``(sample_id, position)`` and add ``score``.

    Both dumps must hold exactly the same tokens: the same keys, ``token_id`` and ``is_response``
    (§A12: a mismatch means the two scoring runs tokenised differently, which is an error).
    Returns ``sample_id, position, token_id, is_response, loss_util, loss_harm, score`` sorted by key;
    ``score`` is NaN on prompt rows, which take no part in selection.
    """
    for name, df in (("util", util), ("harm", harm)):
        require_columns(df, DUMP_COLUMNS, f"{name} loss dump")
        if df.duplicated(KEYS).any():
            first = df.loc[df.duplicated(KEYS), KEYS].iloc[0].tolist()
            raise ValueError(f"{name} loss dump has duplicate (sample_id, position) rows, first {tuple(first)}")
    merged = pd.merge(
        util[DUMP_COLUMNS],
        harm[DUMP_COLUMNS],
        on=KEYS,
        how="outer",
        suffixes=("_util", "_harm"),
        indicator=True,
    ).sort_values(KEYS, kind="stable", ignore_index=True)
    unmatched = merged["_merge"] != "both"
    if unmatched.any():
        row = merged.loc[unmatched].iloc[0]
        side = "util" if row["_merge"] == "left_only" else "harm"
        raise ValueError(
            f"loss dumps cover different tokens: (sample_id={row.sample_id}, position={row.position}) is only in "
            f"the {side} dump ({int(unmatched.sum())} unmatched rows); both must score the same tokenisation"
        )
    for col in ("token_id", "is_response"):
        bad = merged[f"{col}_util"].to_numpy() != merged[f"{col}_harm"].to_numpy()
        if bad.any():
            row = merged.loc[bad].iloc[0]
            raise ValueError(
                f"{col} mismatch between loss dumps at sample_id={row.sample_id}, position={row.position}: "
                f"util has {row[f'{col}_util']}, harm has {row[f'{col}_harm']} ({int(bad.sum())} rows differ)"
            )
    is_resp = merged["is_response_util"].to_numpy(dtype=bool)
    score = token_scores(merged["loss_util"], merged["loss_harm"])
    return pd.DataFrame(
        {
            "sample_id": merged["sample_id"].to_numpy(np.int64),
            "position": merged["position"].to_numpy(np.int32),
            "token_id": merged["token_id_util"].to_numpy(np.int32),
            "is_response": is_resp,
            "loss_util": merged["loss_util"].to_numpy(),
            "loss_harm": merged["loss_harm"].to_numpy(),
            "score": np.where(is_resp, score, np.nan),
        }
    )


def _check_d(d: float) -> None:
    if not (isinstance(d, (int, float)) and 0 <= d < 1):
        raise ValueError(f"discard fraction d must satisfy 0 <= d < 1, got {d!r}")


def _budget(d: float, n: np.ndarray | int) -> np.ndarray | int:
    """``floor(d * n)``, rounded first so that e.g. 0.29 * 100 = 28.999999999999996 gives 29, not 28."""
    return np.floor(np.round(np.multiply(d, n), 9)).astype(np.int64)


def _response_order(df: pd.DataFrame) -> np.ndarray:
    """Row indices (into ``df``) of the response tokens, by score descending, ties by (sample_id, position)."""
    require_columns(df, ["sample_id", "position", "is_response", "score"], "scored table")
    resp = np.flatnonzero(df["is_response"].to_numpy(dtype=bool))
    score = df["score"].to_numpy(dtype=np.float64)[resp]
    if np.isnan(score).any():
        raise ValueError(f"{int(np.isnan(score).sum())} response tokens have a NaN score")
    # lexsort sorts by the last key first.
    order = np.lexsort((df["position"].to_numpy()[resp], df["sample_id"].to_numpy()[resp], -score))
    return resp[order]


def global_topd_mask(df: pd.DataFrame, d: float) -> pd.DataFrame:
    """Copy of ``df`` with ``discard``: the top ``floor(d * N_tok)`` response tokens by score, dataset-wide
    (docs/methods.md §1.5)."""
    _check_d(d)
    order = _response_order(df)
    discard = np.zeros(len(df), dtype=bool)
    discard[order[: int(_budget(d, len(order)))]] = True
    return df.assign(discard=discard)


def per_sample_topd_mask(df: pd.DataFrame, d: float) -> pd.DataFrame:
    """Copy of ``df`` with ``discard``: the top ``floor(d * n_i)`` response tokens of each sample (the ablation)."""
    _check_d(d)
    order = _response_order(df)
    sid = df["sample_id"].to_numpy()[order]
    # Group by sample while keeping each sample's score order (stable sort).
    by_sample = order[np.argsort(sid, kind="stable")]
    sid_sorted = df["sample_id"].to_numpy()[by_sample]
    starts = np.r_[0, np.flatnonzero(sid_sorted[1:] != sid_sorted[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(sid_sorted)])
    rank = np.arange(len(sid_sorted)) - np.repeat(starts, sizes)
    keep_n = np.repeat(_budget(d, sizes), sizes)
    discard = np.zeros(len(df), dtype=bool)
    discard[by_sample[rank < keep_n]] = True
    return df.assign(discard=discard)


def mask_summary(df: pd.DataFrame) -> dict:
    """Counts of a mask: response tokens, discarded tokens, samples, samples with >= 1 discard, discard share."""
    require_columns(df, ["sample_id", "is_response", "discard"], "masked table")
    resp = df["is_response"].to_numpy(dtype=bool)
    discard = df["discard"].to_numpy(dtype=bool) & resp
    total, dropped = int(resp.sum()), int(discard.sum())
    return {
        "tokens_total": total,
        "tokens_discarded": dropped,
        "samples_total": int(df["sample_id"].nunique()),
        "samples_touched": int(df.loc[discard, "sample_id"].nunique()),
        "discard_share": dropped / total if total else 0.0,
    }


def discard_precision_recall(df: pd.DataFrame, poison_flag_column: str = "is_poison_token") -> dict:
    """Precision / recall / F1 of the discarded response tokens against a boolean ground-truth column.

    Undefined ratios (nothing discarded, no poison tokens) are reported as 0.0 (sklearn's
    ``zero_division=0``), which keeps the result JSON-serialisable.
    """
    require_columns(df, ["is_response", "discard", poison_flag_column], "masked table")
    resp = df["is_response"].to_numpy(dtype=bool)
    pred = df["discard"].to_numpy(dtype=bool)[resp]
    truth = df[poison_flag_column].to_numpy(dtype=bool)[resp]
    tp = int((pred & truth).sum())
    precision = tp / int(pred.sum()) if pred.any() else 0.0
    recall = tp / int(truth.sum()) if truth.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_poison_tokens": int(truth.sum())}


def pick_refinement_samples(df: pd.DataFrame, k: int, exclude: set[int] | Iterable[int] = ()) -> list[int]:
    """TOSS-Pro step (docs/methods.md §1.7): the first ``k`` distinct samples met walking response tokens by
    descending score.

    Samples in ``exclude`` (those already in the harmful set D^h_t) are skipped. If fewer than ``k``
    eligible samples exist, all of them are returned (in walk order), so callers should check the length.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    sids = pd.unique(df["sample_id"].to_numpy()[_response_order(df)])  # keeps first-appearance order
    excluded = np.fromiter((int(s) for s in exclude), dtype=np.int64)
    eligible = sids[~np.isin(sids, excluded)]
    return [int(s) for s in eligible[: int(k)]]


def discarded_positions(df: pd.DataFrame) -> dict[int, np.ndarray]:
    """``{sample_id: sorted positions with discard=True}`` for feeding :func:`retained_labels` per sample."""
    require_columns(df, ["sample_id", "position", "discard"], "masked table")
    hit = df.loc[df["discard"].to_numpy(dtype=bool), ["sample_id", "position"]].sort_values(KEYS)
    return {int(s): g["position"].to_numpy(np.int64) for s, g in hit.groupby("sample_id", sort=True)}


def retained_labels(
    input_ids: np.ndarray | torch.Tensor,
    response_mask: np.ndarray | torch.Tensor,
    discard_positions: Iterable[int] | np.ndarray,
) -> np.ndarray | torch.Tensor:
    """Labels ``[T]`` for selective SFT: ``input_ids`` with ``IGNORE_INDEX`` on prompt and discarded positions.

    Discarded tokens stay in the input; only their label goes. Returns int64 of the input's kind
    (a torch tensor on the same device, or a numpy array). A discard position outside the response
    raises: it means the mask and the SFT tokenisation disagree (§A12).
    """
    is_torch = isinstance(input_ids, torch.Tensor)
    ids = input_ids.detach().cpu().numpy() if is_torch else np.asarray(input_ids)
    resp = (
        response_mask.detach().cpu().numpy() if isinstance(response_mask, torch.Tensor) else np.asarray(response_mask)
    ).astype(bool)
    if ids.ndim != 1 or resp.shape != ids.shape:
        raise ValueError(f"input_ids and response_mask must both be [T]; got {ids.shape} and {resp.shape}")
    pos = np.asarray(
        list(discard_positions) if not isinstance(discard_positions, np.ndarray) else discard_positions, dtype=np.int64
    ).reshape(-1)
    if pos.size and (pos.min() < 0 or pos.max() >= ids.shape[0]):
        raise ValueError(f"discard positions must lie in [0, {ids.shape[0]}), got min {pos.min()} max {pos.max()}")
    if pos.size and not resp[pos].all():
        raise ValueError(f"discard positions {pos[~resp[pos]].tolist()} are not response tokens")
    labels = np.where(resp, ids, IGNORE_INDEX).astype(np.int64)
    labels[pos] = IGNORE_INDEX
    return torch.from_numpy(labels).to(input_ids.device) if is_torch else labels
