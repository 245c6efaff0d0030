"""Run any classifier judge of :mod:`.classifiers` over (prompt, response) pairs with transformers.

* ``llama_guard`` goes through :func:`.guard_judge.judge_pairs` unchanged (same prompts,
  truncation, greedy verdicts and first-token P(unsafe) as the existing judge stage), re-labelled as
  :class:`ClassifierVerdict` (``score`` = P(unsafe), ``fields["categories"]``).
* other ``generative`` judges: the judge's prompt, tokenised as the published code does
  (``judge.add_special_tokens``), left-padded, greedy, ``judge.max_new_tokens`` new tokens, decoded without
  special tokens and parsed with the judge's rule. ``score`` stays None (the published rules give none).
* ``score_tokens`` (StrongREJECT fine-tuned): one forward pass, left-padded; the logits of the tokens
  ``"1"``..``"5"`` at the last position go to :func:`strongreject_from_logits`.
* ``sequence_classification`` (beaver-dam-7b): right-padded as published, truncated to ``judge.max_length``
  keeping the start; the class logits go to :func:`beaverdam_from_logits` (names from ``config.id2label``).

Prompts longer than the model's context (minus the new tokens) keep their first token and their end, as
:func:`judge_pairs` does. Results come back in input order.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from tokensafe.eval.safety_judges.classifiers import (
    BEAVERDAM_CATEGORIES,
    BEAVERDAM_THRESHOLD,
    STRONGREJECT_SCORE_TOKENS,
    ClassifierJudge,
    ClassifierVerdict,
    beaverdam_from_logits,
    get_judge,
    strongreject_from_logits,
)


def _encode(tok, judge: ClassifierJudge, users, responses, limit: int | None) -> list[list[int]]:
    out = []
    for u, r in zip(users, responses):
        ids = list(tok(judge.prompt(u, r, tok), add_special_tokens=judge.add_special_tokens)["input_ids"])
        if limit is not None and len(ids) > limit:
            ids = ids[:limit] if judge.kind == "sequence_classification" else ids[:1] + ids[-(limit - 1) :]
        out.append(ids)
    return out


def _batch(seqs: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        sl = slice(n - len(seq), n) if left else slice(0, len(seq))
        ids[row, sl] = torch.tensor(seq, dtype=torch.long)
        mask[row, sl] = 1
    return ids, mask


def score_token_ids(tok, tokens: Sequence[str] = STRONGREJECT_SCORE_TOKENS) -> list[int]:
    """Vocabulary ids of ``tokens`` as whole tokens (the published ``tokenizer.vocab[t]``); a ValueError when absent."""
    vocab = tok.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        raise ValueError(f"score tokens {missing} are not single tokens of the judge's vocabulary")
    return [int(vocab[t]) for t in tokens]


@torch.no_grad()
def classify_pairs(
    model,
    tok,
    judge: ClassifierJudge | str,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    threshold: float = BEAVERDAM_THRESHOLD,
) -> list[ClassifierVerdict]:
    """One :class:`ClassifierVerdict` per (prompt, response), in input order.

    ``max_new_tokens`` overrides the judge's published generation length (generative judges only);
    ``threshold`` is beaver-dam's flagging threshold.
    """
    judge = get_judge(judge) if isinstance(judge, str) else judge
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1, found {batch_size}")
    new_tokens = judge.max_new_tokens if max_new_tokens is None else max_new_tokens
    if judge.name == "llama_guard":
        from tokensafe.eval.safety_judges.guard_judge import judge_pairs

        results, _ = judge_pairs(model, tok, list(prompts), list(responses), new_tokens, batch_size, progress)
        return [ClassifierVerdict(r.verdict, r.p_unsafe, r.raw, {"categories": list(r.categories)}) for r in results]
    if not prompts:
        return []
    device = next(model.parameters()).device
    context = getattr(model.config, "max_position_embeddings", None)
    if judge.kind == "sequence_classification":
        limit = judge.max_length if context is None else min(judge.max_length or context, context)
    else:
        limit = None if context is None else context - (new_tokens if judge.kind == "generative" else 0)
    encoded = _encode(tok, judge, prompts, responses, limit)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    score_ids = score_token_ids(tok) if judge.kind == "score_tokens" else None
    id2label = getattr(model.config, "id2label", None) or {}
    labels = [id2label[i] for i in sorted(id2label)] if id2label else list(BEAVERDAM_CATEGORIES)
    results: list[ClassifierVerdict | None] = [None] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        left = judge.kind != "sequence_classification"
        ids, mask = _batch([encoded[i] for i in idx], pad, left)
        ids, mask = ids.to(device), mask.to(device)
        if judge.kind == "generative":
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tok.eos_token_id,
            )
            for row, i in enumerate(idx):
                results[i] = judge.parse(tok.decode(out[row, ids.shape[1] :].tolist(), skip_special_tokens=True))
        elif judge.kind == "score_tokens":
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -1, :].float()
            for row, i in enumerate(idx):
                results[i] = strongreject_from_logits(logits[row, score_ids].tolist())
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            for row, i in enumerate(idx):
                results[i] = beaverdam_from_logits(logits[row].tolist(), threshold, labels)
        if progress:
            progress(min(start + batch_size, len(order)), len(order))
    return results  # type: ignore[return-value]


def invalid_count(verdicts: Sequence[ClassifierVerdict]) -> int:
    """How many verdicts are ``invalid`` (judge failures; never counted as safe)."""
    return sum(not v.is_valid for v in verdicts)
