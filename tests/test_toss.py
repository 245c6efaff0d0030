"""TOSS scoring, top-d masks, TOSS-Pro sample picking and retained labels (docs/methods.md §1.4-1.7, §A12)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tokensafe.methods.toss.scores import (
    discard_precision_recall,
    discarded_positions,
    global_topd_mask,
    mask_summary,
    merge_loss_dumps,
    per_sample_topd_mask,
    pick_refinement_samples,
    retained_labels,
    token_scores,
)
from tokensafe.train.loss_dumps import loss_table

# Two samples, each: 1 prompt token (position 0) + 5 response tokens (positions 1..5).
# Response scores S = L_u - L_h, with L_h = 1.0 everywhere and L_u = S + 1.0:
#   sample 0: [3.0, -1.0, 0.5, 2.0, 0.0 ]
#   sample 1: [1.0,  4.0, -2.0, 2.0, 0.25]
# Descending, ties by (sample_id, position):
#   4.0 (1,2)  3.0 (0,1)  2.0 (0,4)  2.0 (1,4)  1.0 (1,1)  0.5 (0,3)  0.25 (1,5)  0.0 (0,5)  -1.0 (0,2)  -2.0 (1,3)
SCORES = {0: [3.0, -1.0, 0.5, 2.0, 0.0], 1: [1.0, 4.0, -2.0, 2.0, 0.25]}
POISON = {(0, 3), (1, 2), (1, 4)}  # ground-truth harmful response tokens


def dumps() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for sid, scores in SCORES.items():
        rows.append((sid, 0, 100 + sid, 7.0, 0.5, False))  # prompt row: never scored
        for pos, s in enumerate(scores, start=1):
            rows.append((sid, pos, 10 * sid + pos, s + 1.0, 1.0, True))
    full = pd.DataFrame(rows, columns=["sample_id", "position", "token_id", "lu", "lh", "is_response"])
    util = full.drop(columns="lh").rename(columns={"lu": "loss"})
    harm = full.drop(columns="lu").rename(columns={"lh": "loss"})
    return util, harm


def scored() -> pd.DataFrame:
    util, harm = dumps()
    return merge_loss_dumps(util, harm.sample(frac=1.0, random_state=0))  # harm rows shuffled: join is by key


def discarded(df: pd.DataFrame) -> set[tuple[int, int]]:
    hit = df[df["discard"]]
    return set(zip(hit["sample_id"].tolist(), hit["position"].tolist()))


def test_score_sign():
    # Token A: utility model finds it unlikely (L_u = 2.0), harmful model likely (L_h = 0.5) -> S = +1.5, risky.
    # Token B: the reverse -> S = -1.5, safe.
    np.testing.assert_allclose(token_scores(np.array([2.0, 0.5]), pd.Series([0.5, 2.0])), [1.5, -1.5])
    with pytest.raises(ValueError, match="same shape"):
        token_scores(np.zeros(2), np.zeros(3))


def test_merge_adds_scores_only_on_response_rows():
    df = scored()
    assert df[["sample_id", "position"]].values.tolist() == [[s, p] for s in (0, 1) for p in range(6)]
    resp = df[df["is_response"]]
    np.testing.assert_allclose(resp["score"].to_numpy(), SCORES[0] + SCORES[1])
    assert df.loc[~df["is_response"], "score"].isna().all()  # prompt rows: L_u - L_h = 6.5 but unscored


def test_merge_rejects_misaligned_dumps():
    util, harm = dumps()
    bad = harm.copy()
    bad.loc[(bad.sample_id == 1) & (bad.position == 3), "token_id"] = 999
    with pytest.raises(ValueError, match=r"token_id mismatch .*sample_id=1, position=3"):
        merge_loss_dumps(util, bad)
    with pytest.raises(ValueError, match=r"sample_id=0, position=5\) is only in the util dump"):
        merge_loss_dumps(util, harm[~((harm.sample_id == 0) & (harm.position == 5))])
    flipped = harm.copy()
    flipped.loc[(flipped.sample_id == 0) & (flipped.position == 0), "is_response"] = True
    with pytest.raises(ValueError, match=r"is_response mismatch .*sample_id=0, position=0"):
        merge_loss_dumps(util, flipped)
    with pytest.raises(ValueError, match="duplicate"):
        merge_loss_dumps(pd.concat([util, util.iloc[:1]]), harm)


def test_merge_accepts_loss_table_output():
    ids = np.array([[1, 2, 3]])
    resp = np.array([[False, True, True]])
    util = loss_table([4], ids, resp, np.array([[0.0, 2.0, 1.0]])).to_pandas()
    harm = loss_table([4], ids, resp, np.array([[0.0, 0.5, 1.5]])).to_pandas()
    df = merge_loss_dumps(util, harm)
    np.testing.assert_allclose(df["score"].to_numpy(), [np.nan, 1.5, -0.5])  # 2.0-0.5, 1.0-1.5


def test_global_topd():
    df = scored()
    # N_tok = 10. d=0.3 -> 3: (1,2)=4.0, (0,1)=3.0, and of the tied 2.0s the lower sample_id (0,4).
    assert discarded(global_topd_mask(df, 0.3)) == {(1, 2), (0, 1), (0, 4)}
    # d=0.25 -> floor(2.5) = 2.
    assert discarded(global_topd_mask(df, 0.25)) == {(1, 2), (0, 1)}
    assert discarded(global_topd_mask(df, 0.0)) == set()
    assert "discard" not in df.columns  # returns a copy


def test_global_topd_budget_is_robust_to_float_error():
    # 0.29 * 100 = 28.999999999999996 in floating point; the budget must still be 29.
    df = pd.DataFrame(
        {"sample_id": np.arange(100), "position": 1, "is_response": True, "score": np.arange(100, dtype=float)}
    )
    out = global_topd_mask(df, 0.29)
    assert out["discard"].sum() == 29 and out.loc[out["discard"], "score"].min() == 71.0


def test_per_sample_topd():
    df = scored()
    # n_i = 5 each. d=0.4 -> 2 per sample: sample 0 -> 3.0 (p1), 2.0 (p4); sample 1 -> 4.0 (p2), 2.0 (p4).
    assert discarded(per_sample_topd_mask(df, 0.4)) == {(0, 1), (0, 4), (1, 2), (1, 4)}
    # d=0.3 -> floor(1.5) = 1 per sample.
    assert discarded(per_sample_topd_mask(df, 0.3)) == {(0, 1), (1, 2)}
    # Uneven sizes: drop sample 1's last 3 response tokens -> n = (5, 2); d=0.5 -> (2, 1).
    small = df[~((df.sample_id == 1) & (df.position >= 3))]
    assert discarded(per_sample_topd_mask(small, 0.5)) == {(0, 1), (0, 4), (1, 2)}


@pytest.mark.parametrize("d", [1.0, -0.1, 1.5])
def test_topd_rejects_bad_d(d):
    with pytest.raises(ValueError, match="0 <= d < 1"):
        global_topd_mask(scored(), d)
    with pytest.raises(ValueError, match="0 <= d < 1"):
        per_sample_topd_mask(scored(), d)


def test_mask_summary():
    assert mask_summary(global_topd_mask(scored(), 0.3)) == {
        "tokens_total": 10,
        "tokens_discarded": 3,
        "samples_total": 2,
        "samples_touched": 2,
        "discard_share": 0.3,
    }
    # d=0.1 -> 1 token, (1,2): only sample 1 touched.
    summary = mask_summary(global_topd_mask(scored(), 0.1))
    assert (summary["tokens_discarded"], summary["samples_touched"]) == (1, 1)


def test_precision_recall_by_hand():
    df = global_topd_mask(scored(), 0.4)  # discards (1,2), (0,1), (0,4), (1,4)
    df["is_poison_token"] = [(s, p) in POISON for s, p in zip(df.sample_id, df.position)]
    df.loc[(df.sample_id == 0) & (df.position == 0), "is_poison_token"] = True  # prompt flag: ignored
    # TP = {(1,2), (1,4)} = 2; precision = 2/4; recall = 2/3; F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7.
    got = discard_precision_recall(df)
    assert got["n_poison_tokens"] == 3
    assert got["precision"] == pytest.approx(0.5) and got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(4 / 7)
    # Nothing discarded: precision and recall are 0 by convention, not NaN.
    none = global_topd_mask(scored(), 0.0).assign(is_poison_token=df["is_poison_token"])
    assert discard_precision_recall(none) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "n_poison_tokens": 3}


def test_pick_refinement_samples():
    # Response scores (sample, position) = score; walk by descending score:
    #   6.0 (2,2) -> 2 ; 5.0 (0,1) -> 0 ; 4.5 (1,1) -> 1 ; 4.0 (0,2) dup ; 3.0 (2,1) dup ; 1.0 (3,1) -> 3 ;
    #   -1.0 (1,2) dup
    # The prompt row (3,0) has the largest score but is not a response token, so it is ignored.
    df = pd.DataFrame(
        {
            "sample_id": [0, 0, 1, 1, 2, 2, 3, 3],
            "position": [1, 2, 1, 2, 1, 2, 0, 1],
            "is_response": [True] * 6 + [False, True],
            "score": [5.0, 4.0, 4.5, -1.0, 3.0, 6.0, 100.0, 1.0],
        }
    )
    assert pick_refinement_samples(df, 4, set()) == [2, 0, 1, 3]
    assert pick_refinement_samples(df, 2, {0}) == [2, 1]
    assert pick_refinement_samples(df, 1, {2, 0}) == [1]
    assert pick_refinement_samples(df, 10, {0}) == [2, 1, 3]  # fewer than k candidates: all of them
    assert pick_refinement_samples(df, 0, set()) == []
    with pytest.raises(ValueError, match="non-negative"):
        pick_refinement_samples(df, -1, set())


def test_retained_labels_by_hand():
    ids = np.array([11, 12, 13, 14, 15, 16])
    resp = np.array([0, 0, 1, 1, 1, 1], dtype=bool)
    # Prompt (0,1) -> -100; discarded 3 and 5 -> -100; response 2 and 4 keep their ids.
    expected = [-100, -100, 13, -100, 15, -100]
    assert retained_labels(ids, resp, [3, 5]).tolist() == expected
    as_tensor = retained_labels(torch.tensor(ids), torch.tensor(resp), np.array([3, 5]))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.int64 and as_tensor.tolist() == expected
    assert retained_labels(ids, resp, []).tolist() == [-100, -100, 13, 14, 15, 16]
    assert ids.tolist() == [11, 12, 13, 14, 15, 16]  # input untouched: discarded tokens stay in the context
    with pytest.raises(ValueError, match="not response tokens"):
        retained_labels(ids, resp, [1])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        retained_labels(ids, resp, [6])


def test_discarded_positions_feeds_retained_labels():
    masked = global_topd_mask(scored(), 0.3)  # (1,2), (0,1), (0,4)
    got = discarded_positions(masked)
    assert {k: v.tolist() for k, v in got.items()} == {0: [1, 4], 1: [2]}
    ids = np.array([100, 1, 2, 3, 4, 5])
    resp = np.array([False] + [True] * 5)
    assert retained_labels(ids, resp, got[0]).tolist() == [-100, -100, 2, 3, -100, 5]
