"""Build PACT's cached reference signals (spec 2.4): the no-prompt view and its alignment with the full view.

The frozen reference pi_ref is run twice per example, under no_grad:

* full view: on the training sequence itself -> logits ``[T, V]``; restricted to S with
  ``logits.index_select(-1, S)`` they are already aligned like the trained model's logits.
* no-prompt view: on ``assistant_header + answer[:-1]`` (no system prompt, no user turn, no BOS), built by
  :func:`no_prompt_view`. Its rows :func:`predicting_positions` predict the answer tokens;
  :func:`gather_restricted` picks them (and the S columns), and :func:`align_post_view` places them at
  the full sequence's answer positions, which is the layout :func:`tokensafe.losses.pact.pact_kl_loss`
  expects. :func:`answer_positions` gives the 0-indexed answer position used by the decay (Eq. 8).

The answer ids must be those that actually sit in the (possibly truncated) training sequence,
``input_ids[labels != IGNORE_INDEX]``, end-of-turn token included, so that both views score the same tokens.
"""

from __future__ import annotations

import torch

from tokensafe.losses.common import IGNORE_INDEX

# Any content works: the header is what the generation prompt appends after the user turn.
_PROBE_MESSAGE = "x"


def assistant_header(tokenizer) -> str:
    """The text ``add_generation_prompt=True`` appends to a one-user-message chat (e.g. Qwen's
    ``"<|im_start|>assistant\\n"``): the string difference between the two renderings."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("assistant_header needs a tokenizer with a chat_template")
    msgs = [{"role": "user", "content": _PROBE_MESSAGE}]
    with_prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    if not with_prompt.startswith(without):
        raise ValueError(
            "the chat template's generation prompt is not a plain suffix: "
            f"{without!r} is not a prefix of {with_prompt!r}"
        )
    header = with_prompt[len(without):]
    if not header:
        raise ValueError("add_generation_prompt=True adds nothing to this chat template; there is no assistant header")
    return header


def assistant_header_ids(tokenizer) -> list[int]:
    """Token ids of :func:`assistant_header`, without special tokens (the no-prompt view has no BOS)."""
    return list(tokenizer(assistant_header(tokenizer), add_special_tokens=False)["input_ids"])


def no_prompt_view(assistant_header_ids: list[int], answer_ids: list[int]) -> list[int]:
    """Input ids of the no-prompt view: ``header + answer[:-1]`` (the last answer token predicts nothing)."""
    if not assistant_header_ids:
        raise ValueError("the assistant header is empty: the first answer token would have no predicting position")
    if not answer_ids:
        raise ValueError("the answer is empty: there is nothing to score")
    return list(assistant_header_ids) + list(answer_ids[:-1])


def predicting_positions(prefix_len: int, n_answer: int) -> torch.Tensor:
    """Rows of a view's logits that predict its ``n_answer`` answer tokens when the answer starts after
    ``prefix_len`` tokens: ``prefix_len - 1 .. prefix_len - 2 + n_answer``. For the no-prompt view
    ``prefix_len = len(header)``."""
    if prefix_len < 1 or n_answer < 1:
        raise ValueError(f"need prefix_len >= 1 and n_answer >= 1, got {prefix_len} and {n_answer}")
    return torch.arange(prefix_len - 1, prefix_len - 1 + n_answer, dtype=torch.long)


def gather_restricted(logits: torch.Tensor, positions: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    """``logits[positions][:, ids]``: ``[T, V]`` -> ``[A, K]`` (all ``V`` columns when ``ids`` is None)."""
    if logits.dim() != 2:
        raise ValueError(f"expected one sequence's logits [T, V], got {tuple(logits.shape)}")
    T, V = logits.shape
    if positions.dim() != 1:
        raise ValueError(f"positions must be a [A] vector, got shape {tuple(positions.shape)}")
    if positions.numel() and (positions.min() < 0 or positions.max() >= T):
        raise ValueError(f"positions must lie in [0, {T}), got range [{int(positions.min())}, {int(positions.max())}]")
    rows = logits.index_select(0, positions.to(logits.device))
    if ids is None:
        return rows
    if ids.dim() != 1 or (ids.numel() and (ids.min() < 0 or ids.max() >= V)):
        raise ValueError(f"ids must be a [K] vector of token ids in [0, {V})")
    return rows.index_select(1, ids.to(logits.device))


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """``[..., T]`` unshifted labels -> ``[..., T]`` long: at shifted position t, the 0-indexed answer position
    of the token ``labels[..., t+1]`` predicts (counted over answer tokens only), -1 where t predicts no answer token."""
    target = torch.full_like(labels, IGNORE_INDEX)
    target[..., :-1] = labels[..., 1:]
    is_answer = target != IGNORE_INDEX
    pos = is_answer.long().cumsum(dim=-1) - 1
    return torch.where(is_answer, pos, torch.full_like(pos, -1))


def align_post_view(post_rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Place the no-prompt rows ``[A, K]`` (one per answer token, in order) at the shifted answer positions of
    one sequence with unshifted ``labels`` ``[T]``: returns ``[T, K]``, zeros where no answer token is predicted
    (those rows are never read by the loss). Stack the per-sample results for ``pact_kl_loss``."""
    if post_rows.dim() != 2 or labels.dim() != 1:
        raise ValueError(f"expected post_rows [A, K] and labels [T], got {tuple(post_rows.shape)} and {tuple(labels.shape)}")
    where = answer_positions(labels) >= 0
    n = int(where.sum())
    if n != post_rows.shape[0]:
        raise ValueError(f"the sequence has {n} answer tokens but the no-prompt view gave {post_rows.shape[0]} rows")
    out = post_rows.new_zeros(labels.shape[0], post_rows.shape[1])
    out[where.to(out.device)] = post_rows
    return out


__all__ = [
    "align_post_view",
    "answer_positions",
    "assistant_header",
    "assistant_header_ids",
    "gather_restricted",
    "no_prompt_view",
    "predicting_positions",
]
