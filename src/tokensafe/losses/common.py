"""Conventions shared by every loss in this package.

* ``logits``: ``[B, T, V]`` from a causal LM over ``input_ids`` ``[B, T]``; ``logits[:, t]`` predicts
  ``input_ids[:, t + 1]``.
* ``labels``: ``[B, T]``, a copy of ``input_ids`` with ``IGNORE_INDEX`` on every position that carries
  no loss (prompt, padding, tokens a mask discarded). Labels are *unshifted*, as in Hugging Face.
* "Answer positions" are the shifted positions whose target label is not ``IGNORE_INDEX``.
"""

from __future__ import annotations

import torch

from tokensafe.chat import IGNORE_INDEX


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits with the token they predict: returns ``(logits[:, :-1], labels[:, 1:])``."""
    return logits[:, :-1, :], labels[:, 1:]


def answer_mask(shifted_labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, T-1]`` mask of the positions that carry loss."""
    return shifted_labels != IGNORE_INDEX
