"""Token-masking controls for TOSS on the same data: the same selective objective, other tokens dropped.

random_mask  drop a uniform-random share d of the response tokens, globally (TOSS's control at the same d)
prefix_mask  drop the loss on the first n response tokens of every sample (TOSS's fixed-position diagnostic)
"""

from __future__ import annotations

import numpy as np

from tokensafe.chat import IGNORE_INDEX
from tokensafe.methods.registry import FinetuneContext, FinetunePlan
from tokensafe.train.lm_losses import selective_loss


def build_random_mask(ctx: FinetuneContext) -> FinetunePlan:
    d = ctx.method_settings["d"]
    rng = np.random.default_rng(ctx.settings["seed"])
    resp = [np.flatnonzero(ex["labels"] != IGNORE_INDEX) for ex in ctx.examples]
    total = sum(len(r) for r in resp)
    # Global uniform draw of floor(d * N_tok) response tokens, the same budget as TOSS's global top-d.
    chosen = rng.choice(total, int(np.floor(d * total + 1e-9)), replace=False)
    offsets = np.cumsum([0] + [len(r) for r in resp])
    examples = []
    for i, ex in enumerate(ctx.examples):
        local = chosen[(chosen >= offsets[i]) & (chosen < offsets[i + 1])] - offsets[i]
        labels = ex["labels"].copy()
        labels[resp[i][local]] = IGNORE_INDEX
        examples.append({**ex, "labels": labels})
    return FinetunePlan(
        examples, selective_loss, info={"d": d, "tokens_discarded": int(len(chosen)), "tokens_total": total}
    )


def build_prefix_mask(ctx: FinetuneContext) -> FinetunePlan:
    n = ctx.method_settings["n"]
    examples = []
    for ex in ctx.examples:
        labels = ex["labels"].copy()
        labels[np.flatnonzero(labels != IGNORE_INDEX)[:n]] = IGNORE_INDEX
        examples.append({**ex, "labels": labels})
    return FinetunePlan(examples, selective_loss, info={"n": n})
