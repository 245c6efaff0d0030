"""Stages of the TOSS family after the loss dumps: the token mask (docs/methods.md §1.4-1.5) and the
TOSS-Pro sample picks of each refinement round (§1.7)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from tokensafe.io import read_parquet, write_json, write_parquet
from tokensafe.methods.toss.scores import (
    discard_precision_recall,
    global_topd_mask,
    mask_summary,
    merge_loss_dumps,
    per_sample_topd_mask,
    pick_refinement_samples,
)

log = logging.getLogger("tokensafe")

MASK_COLUMNS = ["sample_id", "position", "token_id", "score", "discard", "is_poison_token"]


def scored_tokens(util_path: str, harm_path: str) -> pd.DataFrame:
    util = read_parquet(util_path)
    harm = read_parquet(harm_path)
    merged = merge_loss_dumps(util, harm)
    flags = util.set_index(["sample_id", "position"])["is_poison_token"]
    merged["is_poison_token"] = flags.reindex(pd.MultiIndex.from_frame(merged[["sample_id", "position"]])).to_numpy()
    return merged


def make_mask(
    *, util_path: str, harm_path: str, d: float, selection: str, out_mask: str, out_summary: str, info: dict
) -> dict:
    """Discard the top-d response tokens by S = L_u - L_h (globally or per sample); report against the truth."""
    scored = scored_tokens(util_path, harm_path)
    masked = global_topd_mask(scored, d) if selection == "global" else per_sample_topd_mask(scored, d)
    resp = masked[masked.is_response]
    summary = {
        **info,
        "d": d,
        "selection": selection,
        **mask_summary(masked),
        **{f"poison_{k}": v for k, v in discard_precision_recall(masked).items()},
        "mean_score_poison": float(resp[resp.is_poison_token].score.mean()) if resp.is_poison_token.any() else None,
        "mean_score_clean": float(resp[~resp.is_poison_token].score.mean()),
    }
    write_parquet(resp[MASK_COLUMNS].reset_index(drop=True), out_mask, metadata=summary)
    write_json(summary, out_summary)
    log.info(
        "mask: discarded %d/%d tokens in %d samples; precision %.3f recall %.3f",
        summary["tokens_discarded"],
        summary["tokens_total"],
        summary["samples_touched"],
        summary["poison_precision"],
        summary["poison_recall"],
    )
    return summary


def select_samples(
    *, util_path: str, harm_path: str, k: int, previous: str | None, data_path: str, out: str, round_: int
) -> None:
    """TOSS-Pro: the k highest-scoring fine-tuning samples not chosen before (docs/methods.md §1.7); cumulative."""
    scored = scored_tokens(util_path, harm_path)
    prev = read_parquet(previous, ["sample_id", "round"]) if previous else pd.DataFrame({"sample_id": [], "round": []})
    picks = pick_refinement_samples(scored, k, exclude=set(prev.sample_id.astype(int)))
    data = read_parquet(data_path, ["sample_id"])
    poison = set(data.sample_id[data.is_poison]) if "is_poison" in data else set()
    new = pd.DataFrame({"sample_id": np.asarray(picks, dtype=np.int64), "round": round_})
    out_df = pd.concat([prev.astype({"sample_id": "int64", "round": "int64"}), new], ignore_index=True)
    hit = float(np.mean([p in poison for p in picks])) if picks else 0.0
    write_parquet(out_df, out, metadata={"k": k, "round": round_, "new": len(picks), "poison_share_of_new": hit})
    log.info("round %d: picked %d samples (%.0f%% poison), %d in total", round_, len(picks), 100 * hit, len(out_df))
