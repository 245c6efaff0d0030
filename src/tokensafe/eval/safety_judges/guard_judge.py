"""Run a Llama-Guard model over (prompt, response) pairs: verdict, categories and P(unsafe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tokensafe.eval.safety_judges.llama_guard import (
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


def verdict_probability_from_logprobs(step_logprobs: dict, safe_ids, unsafe_ids) -> float:
    """P(unsafe) from vLLM's log-probabilities of the verdict tokens at one step: Σ_u p_u / (Σ_u p_u + Σ_s p_s),
    as :func:`.llama_guard.unsafe_probabilities` computes it from logits; NaN when none is there."""
    import math

    lp = {int(k): (v.logprob if hasattr(v, "logprob") else float(v)) for k, v in (step_logprobs or {}).items()}
    u = [math.exp(lp[i]) for i in unsafe_ids if i in lp]
    s = [math.exp(lp[i]) for i in safe_ids if i in lp]
    return sum(u) / (sum(u) + sum(s)) if (u or s) else float("nan")


def judge_pairs_vllm(
    guard: str, tok, users: list[str], agents: list[str], vllm_cfg: dict, max_new_tokens: int = 10
) -> tuple[list[GuardResult], str]:
    """:func:`judge_pairs` through one vLLM engine: the same prompts (truncated the same way) and greedy verdicts
    decoded the same way. P(unsafe) is read as :func:`judge_pairs` reads it, at the first non-whitespace verdict
    token: a second one-token request continues each prompt with the whitespace the guard wrote, restricted to
    the verdict tokens (``allowed_token_ids``), whose renormalised log-probabilities give the ratio exactly
    (top-k log-probabilities of the free step miss verdict tokens outside the top k)."""
    from transformers import AutoConfig

    from tokensafe.eval.generation.vllm_backend import Engine

    limit = getattr(AutoConfig.from_pretrained(guard), "max_position_embeddings", 8192) - max_new_tokens
    encoded = [_prompt_ids(tok, u, a, limit) for u, a in zip(users, agents)]
    safe_ids, unsafe_ids = verdict_token_ids(tok)
    verdict = safe_ids + unsafe_ids
    engine = Engine(guard, vllm_cfg, lora=False, logprobs_mode="processed_logprobs")
    [outs] = engine.run([([ids for ids, _ in encoded], {"greedy": True, "max_new_tokens": max_new_tokens}, None)])
    steps = [next((s for s, t in enumerate(o.token_ids) if tok.decode([t]).strip()), 0) for o in outs]
    scoring = [ids + list(o.token_ids[:s]) for (ids, _), o, s in zip(encoded, outs, steps)]
    one = {"greedy": True, "max_new_tokens": 1, "allowed_token_ids": verdict}
    [scores] = engine.run([(scoring, one, None)], logprobs=len(verdict))
    results = []
    for o, sc in zip(outs, scores):
        p = verdict_probability_from_logprobs(sc.logprobs[0] if sc.logprobs else {}, safe_ids, unsafe_ids)
        raw = tok.decode(list(o.token_ids), skip_special_tokens=True)
        v = parse_guard_output(raw)
        results.append(GuardResult(v.verdict, list(v.categories), p, raw))
    return results, ",".join(sorted({t for _, t in encoded}))
