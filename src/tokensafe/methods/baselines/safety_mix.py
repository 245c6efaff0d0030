"""Safety-data mixing: add n safety demonstrations (harmful request -> refusal) to the fine-tuning set."""

from __future__ import annotations

from tokensafe.io import read_parquet
from tokensafe.methods.registry import FinetuneContext, FinetunePlan
from tokensafe.train.encoding import encode_dataset
from tokensafe.train.lm_losses import lm_loss


def build_safety_mix(ctx: FinetuneContext) -> FinetunePlan:
    n = ctx.method_settings["n"]
    demos = read_parquet(ctx.inputs["safety_demos"], ["prompt", "response"])
    if n > len(demos):
        raise ValueError(f"safety_mix.n = {n}, but the safety demonstration set has {len(demos)} rows")
    demos = demos.sample(n=n, random_state=ctx.settings["seed"])
    extra = encode_dataset(ctx.tokenizer, demos, ctx.settings["prompt_template"], ctx.settings["max_length"])
    return FinetunePlan(ctx.examples + extra, lm_loss, info={"safety_demos": n})
