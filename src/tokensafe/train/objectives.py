"""Loss functions with the training loop's signature ``(model, batch) -> (loss, stats)``.

Each method's objective lives in ``tokensafe.losses``; these adapters only run the forward pass and
hand the tensors over, so the math stays unit-testable without a model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokensafe.losses.common import answer_mask, shift_for_next_token


def lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-mean cross-entropy over every labelled position (response-only SFT when the prompt is -100)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return out.loss, {}


def labelled_lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`lm_loss` with the LM head applied only where a label is predicted.

    Hand-written because transformers' ``logits_to_keep`` keeps the same positions in every row: a
    Llama-Guard verdict is 3-4 labelled tokens after ~270 prompt tokens of varying length, and projecting
    every position onto the vocabulary was 40 % of the embedded guard's training time. Same loss (token
    mean over labelled positions); only the summation order of the head's gradient differs.
    """
    hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    hidden, targets = shift_for_next_token(hidden, batch["labels"])
    keep = answer_mask(targets)
    logits = model.get_output_embeddings()(hidden[keep])
    return F.cross_entropy(logits.float(), targets[keep]), {}
