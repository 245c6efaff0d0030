"""PACT's cached reference signals (docs/methods.md §2.4): the stage that writes them and the helpers that
both it and the fine-tune (:mod:`tokensafe.methods.pact.regularized_sft`) build them with.

The frozen reference pi_ref is the aligned model: during LoRA training it equals the trained model with its
adapters disabled, so its logits on a fixed data set never change. :func:`write_reference_signals` runs it
once per example in two views, under no_grad, and every epoch and run reuses them (exact, not an
approximation):

* full view: on the training sequence itself;
* no-prompt view: on ``assistant_header + answer[:-1]`` (no system prompt, no user turn, no BOS), built by
  :func:`no_prompt_view` after :func:`assistant_header_ids`.

In each view the rows :func:`predicting_positions` predict the answer tokens; :func:`gather_restricted`
picks them (and the S columns). At training time :func:`align_post_view` places both views' rows at the
sequence's answer positions, the layout :func:`tokensafe.methods.pact.kl.pact_kl_loss` expects, and
:func:`answer_positions` gives the 0-indexed answer position the decay reads (Eq. 8).

The answer ids must be those that actually sit in the (possibly truncated) training sequence,
``input_ids[labels != IGNORE_INDEX]``, end-of-turn token included, so that both views score the same tokens.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import torch

from tokensafe.chat import IGNORE_INDEX
from tokensafe.io import atomic_path, read_parquet, write_json
from tokensafe.methods.pact.token_stats import weight_conflicts
from tokensafe.train.encoding import encode_dataset
from tokensafe.train.lora import load_model, load_tokenizer

log = logging.getLogger("tokensafe")

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
    header = with_prompt[len(without) :]
    if not header:
        raise ValueError("add_generation_prompt=True adds nothing to this chat template; there is no assistant header")
    return header


def assistant_header_ids(tokenizer, template: str = "chat") -> list[int]:
    """Token ids of the no-prompt view's assistant header, without special tokens (the view has no BOS):
    :func:`assistant_header` for the chat template, ``"Assistant: "`` for the plain-text templates."""
    header = assistant_header(tokenizer) if template == "chat" else "Assistant: "
    return list(tokenizer(header, add_special_tokens=False)["input_ids"])


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
    of the token ``labels[..., t+1]`` predicts (counted over answer tokens only), -1 where t predicts no answer
    token."""
    target = torch.full_like(labels, IGNORE_INDEX)
    target[..., :-1] = labels[..., 1:]
    is_answer = target != IGNORE_INDEX
    pos = is_answer.long().cumsum(dim=-1) - 1
    return torch.where(is_answer, pos, torch.full_like(pos, -1))


def align_post_view(post_rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Place a view's rows ``[A, K]`` (one per answer token, in order; the fine-tune places both views with it) at
    the shifted answer positions of
    one sequence with unshifted ``labels`` ``[T]``: returns ``[T, K]``, zeros where no answer token is predicted
    (those rows are never read by the loss). Stack the per-sample results for ``pact_kl_loss``."""
    if post_rows.dim() != 2 or labels.dim() != 1:
        raise ValueError(
            f"expected post_rows [A, K] and labels [T], got {tuple(post_rows.shape)} and {tuple(labels.shape)}"
        )
    where = answer_positions(labels) >= 0
    n = int(where.sum())
    if n != post_rows.shape[0]:
        raise ValueError(f"the sequence has {n} answer tokens but the no-prompt view gave {post_rows.shape[0]} rows")
    out = post_rows.new_zeros(labels.shape[0], post_rows.shape[1])
    out[where.to(out.device)] = post_rows
    return out


@torch.no_grad()
def write_reference_signals(
    *,
    aligned: str,
    data_path: str,
    tokens_path: str,
    settings: dict,
    out: str,
    out_conflicts: str | None = None,
    info: dict | None = None,
    batch_size: int = 32,
) -> None:
    """z^full and z^post of the frozen aligned model at every answer position, restricted to S (safetensors),
    with the answer token each position predicts; ``out_conflicts`` gets :func:`conflict_summary` (JSON),
    preceded by ``info`` (the set's poison ratio and seed)."""
    from safetensors.torch import save_file

    from tokensafe.train.batching import collate

    df = read_parquet(data_path, ["sample_id", "prompt", "response"])
    tokens = read_parquet(tokens_path, ["token_id", "token", "weight"])
    S = torch.tensor(tokens.token_id.to_numpy(), dtype=torch.long)
    tok = load_tokenizer(aligned)
    model = load_model(aligned, settings.get("dtype", "auto"))
    device = next(model.parameters()).device
    examples = encode_dataset(tok, df, settings["prompt_template"], settings["max_length"])
    head = assistant_header_ids(tok, settings["prompt_template"])
    full_rows, post_rows, sids, positions, targets = [], [], [], [], []

    def restricted(ex_list, prefix_lens, lengths):
        """Each view's rows predicting its answer tokens, restricted to S: ``[A, K]`` per example."""
        batch = collate(ex_list, pad_id=tok.pad_token_id)
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        return [
            gather_restricted(logits[i], predicting_positions(p, n), S).float().cpu()
            for i, (p, n) in enumerate(zip(prefix_lens, lengths))
        ]

    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        prompt_lens = [int((e["labels"] == IGNORE_INDEX).sum()) for e in chunk]
        answers = [e["input_ids"][p:] for e, p in zip(chunk, prompt_lens)]
        full = restricted(chunk, prompt_lens, [len(a) for a in answers])
        post_inputs = [
            {
                "input_ids": np.asarray(no_prompt_view(head, list(a)), dtype=np.int64),
                "labels": np.zeros(len(head) + len(a) - 1, dtype=np.int64),
            }
            for a in answers
        ]
        post = restricted(post_inputs, [len(head)] * len(chunk), [len(a) for a in answers])
        for j, (f, q, p) in enumerate(zip(full, post, prompt_lens)):
            full_rows.append(f)
            post_rows.append(q)
            sids.append(np.full(len(f), int(df.sample_id.iloc[start + j])))
            positions.append(np.arange(p - 1, p - 1 + len(f)))
            targets.append(np.asarray(answers[j], dtype=np.int64))
    tensors = {
        "full": torch.cat(full_rows),
        "post": torch.cat(post_rows),
        "safety_ids": S,
        "sample_id": torch.as_tensor(np.concatenate(sids)),
        "position": torch.as_tensor(np.concatenate(positions)),
        "token_id": torch.as_tensor(np.concatenate(targets)),
    }
    with atomic_path(out) as tmp:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata=file_metadata(data=data_path, tokens=tokens_path),
        )
    log.info("reference signals: %d answer tokens x %d safety tokens, two views", len(tensors["full"]), len(S))
    if out_conflicts:
        poison = set(df.sample_id[df.is_poison.astype(bool)]) if "is_poison" in df.columns else None
        summary = {**(info or {}), **conflict_summary(tensors["token_id"], tensors["sample_id"], tokens, poison)}
        write_json(summary, out_conflicts)
        log.info(
            "weight conflicts: %d of %d answer positions (%s)",
            summary["conflicts"],
            summary["positions"],
            summary["population"],
        )


def file_metadata(**fields: str) -> dict[str, str]:
    """safetensors metadata as ONE key holding sorted JSON: safetensors writes its metadata map in hash order,
    which differs from process to process, so two keys made the same run's file differ byte for byte."""
    return {"tokensafe": json.dumps(fields, sort_keys=True)}


def conflict_summary(
    token_ids: torch.Tensor, sample_ids: torch.Tensor, tokens: pd.DataFrame, poison: set[int] | None, top: int = 5
) -> dict:
    """How often the weighted KL fights the cross-entropy (:func:`weight_conflicts`) on this fine-tuning set:
    over the answers of the clean samples when the set marks its poison (the embedded world), else all."""
    S = torch.tensor(tokens.token_id.to_numpy(), dtype=torch.long)
    w = torch.tensor(tokens.weight.to_numpy(), dtype=torch.float32)
    keep = torch.ones_like(token_ids, dtype=torch.bool)
    if poison is not None:
        keep = ~torch.isin(sample_ids, torch.tensor(sorted(poison), dtype=torch.long))
    hit = weight_conflicts(token_ids, S, w) & keep
    ids, counts = torch.unique(token_ids[hit], return_counts=True)
    text = dict(zip(tokens.token_id, tokens.token))
    order = counts.argsort(descending=True)[:top]
    return {
        "population": "clean samples" if poison is not None else "all samples",
        "positions": int(keep.sum()),
        "conflicts": int(hit.sum()),
        "share": float(hit.sum()) / max(int(keep.sum()), 1),
        "zero_weight_tokens": int((w <= 0).sum()),
        "safety_tokens": len(S),
        "tokens": [{"token_id": int(ids[i]), "token": text[int(ids[i])], "count": int(counts[i])} for i in order],
    }
