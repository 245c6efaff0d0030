"""Plain LoRA SFT: token-mean cross-entropy over every response token."""

from tokensafe.methods.registry import FinetuneContext, FinetunePlan
from tokensafe.train.lm_losses import lm_loss


def build_sft(ctx: FinetuneContext) -> FinetunePlan:
    return FinetunePlan(ctx.examples, lm_loss)
