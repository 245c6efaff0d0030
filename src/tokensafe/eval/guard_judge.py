"""Run a Llama-Guard model over (prompt, response) pairs: verdict, categories and P(unsafe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tokensafe.eval.llama_guard import (
    TEMPLATE_PLAIN,
    guard_prompt_for,
    parse_guard_output,
    unsafe_probabilities,
    verdict_token_ids,
)


@dataclass
class GuardResult:
    verdict: str
    categories: list[str]
    p_unsafe: float
    raw: str


def _prompt_ids(tok, user: str, agent: str, max_prompt: int) -> tuple[list[int], str]:
    text, template = guard_prompt_for(tok, user, agent)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if template == TEMPLATE_PLAIN and tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids
    # Keep the end (the conversation and the instruction the verdict follows) when too long.
    return (ids[:1] + ids[-(max_prompt - 1) :] if len(ids) > max_prompt else ids), template


@torch.no_grad()
def judge_pairs(
    model,
    tok,
    users: list[str],
    agents: list[str],
    max_new_tokens: int = 10,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[GuardResult], str]:
    """Greedy verdicts for each pair, plus P(unsafe) read at the first non-whitespace answer token."""
    if len(users) != len(agents):
        raise ValueError(f"{len(users)} prompts but {len(agents)} responses")
    device = next(model.parameters()).device
    limit = getattr(model.config, "max_position_embeddings", 8192) - max_new_tokens
    encoded = [_prompt_ids(tok, u, a, limit) for u, a in zip(users, agents)]
    templates = {t for _, t in encoded}
    safe_ids, unsafe_ids = verdict_token_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    results: list[GuardResult | None] = [None] * len(users)
    order = sorted(range(len(users)), key=lambda i: -len(encoded[i][0]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        n = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), n), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            seq = encoded[i][0]
            ids[row, n - len(seq) :] = torch.tensor(seq)
            mask[row, n - len(seq) :] = 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
        )
        gen = out.sequences[:, n:]
        scores = torch.stack(out.scores, dim=1)  # [b, steps, V]
        for row, i in enumerate(idx):
            toks = gen[row].tolist()
            step = next((s for s, t in enumerate(toks) if tok.decode([t]).strip()), 0)
            p = float(unsafe_probabilities(scores[row, step][None].float(), safe_ids, unsafe_ids)[0])
            raw = tok.decode(toks, skip_special_tokens=True)
            v = parse_guard_output(raw)
            results[i] = GuardResult(v.verdict, list(v.categories), p, raw)
        if progress:
            progress(min(start + batch_size, len(order)), len(order))
    return results, ",".join(sorted(templates))


def verdict_probability_from_logprobs(step_logprobs: list[dict], token_texts: list[str], safe_ids, unsafe_ids) -> float:
    """P(unsafe) from vLLM's top log-probabilities at the first non-whitespace generated token.

    Normalised over the verdict tokens that appear in the top list (a verdict token outside the top
    list has negligible mass); NaN when neither appears.
    """
    import math

    step = next((i for i, t in enumerate(token_texts) if t.strip()), 0)
    if step >= len(step_logprobs) or not step_logprobs[step]:
        return float("nan")
    lp = {int(k): (v.logprob if hasattr(v, "logprob") else float(v)) for k, v in step_logprobs[step].items()}
    u = [math.exp(lp[i]) for i in unsafe_ids if i in lp]
    s = [math.exp(lp[i]) for i in safe_ids if i in lp]
    return sum(u) / (sum(u) + sum(s)) if (u or s) else float("nan")


def judge_pairs_vllm(
    guard: str, tok, users: list[str], agents: list[str], max_new_tokens: int = 10
) -> tuple[list[GuardResult], str]:
    """The same judgement with a vLLM engine (GPU clusters): greedy verdict text and P(unsafe) from logprobs."""
    from tokensafe.eval.vllm_backend import run_vllm_sets

    limit = 1 << 30
    encoded = [_prompt_ids(tok, u, a, limit) for u, a in zip(users, agents)]
    safe_ids, unsafe_ids = verdict_token_ids(tok)
    outs = run_vllm_sets(
        guard, [([ids for ids, _ in encoded], {"greedy": True, "max_new_tokens": max_new_tokens})], logprobs=20
    )[0]
    results = []
    for o in outs:
        texts = [tok.decode([t]) for t in o.token_ids]
        p = verdict_probability_from_logprobs(o.logprobs or [], texts, safe_ids, unsafe_ids)
        v = parse_guard_output(o.text)
        results.append(GuardResult(v.verdict, list(v.categories), p, o.text))
    return results, ",".join(sorted({t for _, t in encoded}))
