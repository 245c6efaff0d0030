"""Loss functions with the training loop's signature ``(model, batch) -> (loss, stats)``.

Each method's objective lives in ``tokensafe.losses``; these adapters only run the forward pass and
hand the tensors over, so the math stays unit-testable without a model.
"""

from __future__ import annotations

import torch


def lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-mean cross-entropy over every labelled position (response-only SFT when the prompt is -100)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return out.loss, {}
