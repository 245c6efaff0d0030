"""Language-model losses every method shares, and the training loop's loss adapters.

Conventions of every loss in the package:

* ``logits``: ``[B, T, V]`` from a causal LM over ``input_ids`` ``[B, T]``; ``logits[:, t]`` predicts
  ``input_ids[:, t + 1]``.
* ``labels``: ``[B, T]``, a copy of ``input_ids`` with ``IGNORE_INDEX`` on every position that carries
  no loss (prompt, padding, tokens a mask discarded). Labels are *unshifted*, as in Hugging Face.
* "Answer positions" are the shifted positions whose target label is not ``IGNORE_INDEX``.

The adapters (``(model, batch) -> (loss, stats)``, the loop's signature) only run the forward pass and
hand the tensors to the math, which stays unit-testable without a model. CE is computed in float32
whatever the logits' dtype; a discarded token keeps its input and loses only its label (docs/methods.md
§1.6, §A11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokensafe.chat import IGNORE_INDEX


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits with the token they predict: returns ``(logits[:, :-1], labels[:, 1:])``."""
    return logits[:, :-1, :], labels[:, 1:]


def answer_mask(shifted_labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, T-1]`` mask of the positions that carry loss."""
    return shifted_labels != IGNORE_INDEX


def _token_ce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position CE ``[B, T-1]`` (0 where ignored) and the boolean mask of positions that carry loss."""
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and labels [B, T]; got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    shifted_logits, shifted_labels = shift_for_next_token(logits, labels)
    ce = F.cross_entropy(
        shifted_logits.float().transpose(1, 2),
        shifted_labels.long(),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return ce, answer_mask(shifted_labels)


def selective_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """TOSS code normalisation (§A11): per-sample mean CE over retained tokens, then mean over samples that have any.

    A sample with no retained token contributes nothing (the reference code would give NaN). If no
    sample in the batch has one, returns ``0 * logits.sum()``: zero, but still attached to the graph,
    so ``backward()`` and DDP/accumulation work unchanged. With micro-batch 1 this is exactly the
    released code's per-sample mean; averaging over accumulated micro-batches is the caller's job.
    """
    ce, mask = _token_ce(logits, labels)
    counts = mask.sum(dim=1)
    has_tokens = counts > 0
    if not bool(has_tokens.any()):
        return 0.0 * logits.sum()
    per_sample = ce.sum(dim=1) / counts.clamp(min=1)  # clamp only guards the 0/0 of empty samples
    return per_sample[has_tokens].mean()


def response_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plain SFT loss, as HF computes it: token-mean CE over every non-ignored position of the batch.

    Returns ``0 * logits.sum()`` (not NaN) when the batch has no labelled position.
    """
    ce, mask = _token_ce(logits, labels)
    n = mask.sum()
    if int(n) == 0:
        return 0.0 * logits.sum()
    return ce.sum() / n


# --------------------------------------------------------------------------------------------------
# Adapters with the training loop's signature


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


def selective_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`selective_ce_loss` of the model's logits: TOSS's objective, and that of every baseline that
    drops token labels (random and prefix masks)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return selective_ce_loss(out.logits, batch["labels"]), {}
