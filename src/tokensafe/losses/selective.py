"""Cross-entropy losses for TOSS selective fine-tuning and plain SFT (spec 1.6, ambiguity A11).

Both take ``logits [B, T, V]`` and unshifted ``labels [B, T]`` (see :mod:`tokensafe.losses.common`); a
discarded token has label ``IGNORE_INDEX`` but stays in the input, so it gets no loss and no gradient.
CE is computed in float32 whatever the logits' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokensafe.losses.common import IGNORE_INDEX, answer_mask, shift_for_next_token


def _token_ce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position CE ``[B, T-1]`` (0 where ignored) and the boolean mask of positions that carry loss."""
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"expected logits [B, T, V] and labels [B, T]; got {tuple(logits.shape)} and {tuple(labels.shape)}")
    shifted_logits, shifted_labels = shift_for_next_token(logits, labels)
    ce = F.cross_entropy(
        shifted_logits.float().transpose(1, 2), shifted_labels.long(), ignore_index=IGNORE_INDEX, reduction="none",
    )
    return ce, answer_mask(shifted_labels)


def selective_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """TOSS code normalisation (A11): per-sample mean CE over retained tokens, then mean over samples that have any.

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
