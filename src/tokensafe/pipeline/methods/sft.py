"""Plain LoRA SFT: token-mean cross-entropy over every response token."""

from tokensafe.pipeline.objectives import FinetuneContext, FinetunePlan, register
from tokensafe.train.objectives import lm_loss


@register("sft")
def build_sft(ctx: FinetuneContext) -> FinetunePlan:
    return FinetunePlan(ctx.examples, lm_loss)
