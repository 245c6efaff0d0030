"""TOSS and TOSS-Pro selective fine-tuning: discarded tokens stay in the input and carry no loss."""

from __future__ import annotations

import numpy as np

from tokensafe.chat import IGNORE_INDEX
from tokensafe.io import read_parquet
from tokensafe.methods.registry import FinetuneContext, FinetunePlan
from tokensafe.methods.toss.scores import discarded_positions, retained_labels
from tokensafe.train.lm_losses import selective_loss


def check_scored_ids(mask, data, examples) -> None:
    """The ids the loss dumps scored must be the ids trained on (docs/methods.md §A12): a mismatch is an error."""
    for sid, ex in zip(data["sample_id"], examples):
        rows = mask.get(int(sid))
        if rows is None:
            continue
        pos, tok = rows
        if pos.max(initial=-1) >= len(ex["input_ids"]) or not np.array_equal(ex["input_ids"][pos], tok):
            raise ValueError(
                f"sample {sid}: the token ids in the mask differ from the training tokenisation "
                "(different tokenizer, template or max_length between scoring and training)"
            )


def apply_token_mask(ctx: FinetuneContext, mask_path: str) -> tuple[list[dict], dict]:
    m = read_parquet(mask_path, ["sample_id", "position", "token_id", "discard"])
    by_sample = {int(s): (g.position.to_numpy(), g.token_id.to_numpy()) for s, g in m.groupby("sample_id")}
    check_scored_ids(by_sample, ctx.data, ctx.examples)
    dropped = discarded_positions(m)
    out = []
    for sid, ex in zip(ctx.data["sample_id"], ctx.examples):
        labels = retained_labels(ex["input_ids"], ex["labels"] != IGNORE_INDEX, dropped.get(int(sid), []))
        out.append({**ex, "labels": labels})
    info = {"tokens_discarded": int(m.discard.sum()), "tokens_total": int(len(m)), "mask": mask_path}
    return out, info


def build_toss(ctx: FinetuneContext) -> FinetunePlan:
    examples, info = apply_token_mask(ctx, ctx.inputs["mask"])
    return FinetunePlan(examples, selective_loss, info=info)
