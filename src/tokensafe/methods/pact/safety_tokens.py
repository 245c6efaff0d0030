"""Stages of the PACT family before the fine-tune: the aligned model's safe responses and the safety tokens
S with their weights w, from the aligned-vs-base probability gaps (docs/methods.md §2.1-2.2, Eq. 1-2)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from tokensafe.chat import prompt_text
from tokensafe.eval.safety_judges.keyword_judge import is_refusal
from tokensafe.io import read_parquet, write_parquet
from tokensafe.methods.pact.token_stats import GapAccumulator, safety_weights, select_safety_tokens
from tokensafe.train.lora import load_model, load_tokenizer

log = logging.getLogger("tokensafe")

TOKEN_COLUMNS = ["rank", "token_id", "token", "gap", "mean_prob_aligned", "weight"]


def write_safe_responses(
    *, aligned: str, prompts_path: str, settings: dict, gen_cfg: dict, keywords: list[str], out: str
) -> None:
    """The aligned model answers harmful prompts (greedy).

    With ``filter_refusals`` (default) only answers the refusal-keyword judge calls refusals are kept,
    like the official code's guard filter; without it every non-empty answer is kept.
    """
    from tokensafe.eval.generation.generate import generate

    df = read_parquet(prompts_path, ["prompt"])
    pact = settings["method_settings"]
    df = df.head(pact["n_prompts"])
    tok = load_tokenizer(aligned)
    model = load_model(aligned, settings.get("dtype", "auto"))
    responses = generate(
        model,
        tok,
        list(df.prompt),
        settings["prompt_template"],
        {"max_new_tokens": pact["response_tokens"], "greedy": True},
        gen_cfg.get("batch_size", 64),
        what="data.safety_prompts",
    )
    filt = pact.get("filter_refusals", True)
    keep = [r.strip() != "" and (not filt or is_refusal(r, keywords)) for r in responses]
    out_df = pd.DataFrame({"prompt": df.prompt, "response": responses, "kept": keep})
    if not any(keep):
        raise ValueError(
            "the aligned model refused none of the safety prompts: no safe responses to find safety tokens "
            "from (is models.aligned really aligned? pact.filter_refusals: false keeps every answer)"
        )
    write_parquet(out_df, out, metadata={"n": len(out_df), "kept": int(sum(keep))})
    log.info("safe responses: kept %d of %d", sum(keep), len(out_df))


def base_prompt(prompt: str) -> str:
    """PACT's plain view for the base model (docs/methods.md §2.1)."""
    return f"User: {prompt}\n\nAssistant: "


def view_ids(tok, prompt: str, response: str, template: str, max_tokens: int) -> tuple[list[int], list[int], list[int]]:
    """Token ids of the two teacher-forced views: (aligned prefix, base prefix, response), as the official
    ``compute_safety_tokens_pact.py`` builds them (docs/methods.md §2.1).

    One tokenizer (the aligned model's, which the official code loads for both views) and no special tokens
    anywhere: the aligned prefix is the chat rendering with the generation prompt (whatever the template itself
    writes, e.g. Llama-3's ``<|begin_of_text|>``), the base prefix the plain text alone (no BOS), the response the
    stripped answer cut to ``max_tokens``. ``template`` is the aligned view's, ``chat`` where the tokenizer has one.
    """
    resp = tok(response.strip(), add_special_tokens=False)["input_ids"][:max_tokens]
    aligned = tok(prompt_text(tok, prompt, template), add_special_tokens=False)["input_ids"]
    base = tok(base_prompt(prompt), add_special_tokens=False)["input_ids"]
    return aligned, base, resp


@torch.no_grad()
def response_probs(model, prefix_ids: list[int], resp_ids: list[int]) -> torch.Tensor:
    """Softmax (temperature 1) over the vocabulary at the positions predicting each response token."""
    device = next(model.parameters()).device
    ids = torch.tensor([prefix_ids + resp_ids], device=device)
    logits = model(input_ids=ids).logits[0, len(prefix_ids) - 1 : len(prefix_ids) - 1 + len(resp_ids)]
    return torch.softmax(logits.float(), dim=-1).cpu()


def write_safety_tokens(*, aligned: str, base: str, responses_path: str, settings: dict, out: str) -> None:
    pact = settings["method_settings"]
    df = read_parquet(responses_path, ["prompt", "response", "kept"])
    df = df[df.kept]
    tok_s = load_tokenizer(aligned)
    template = "chat" if tok_s.chat_template else settings["prompt_template"]
    m_s = load_model(aligned, settings.get("dtype", "auto"))
    m_b = load_model(base, settings.get("dtype", "auto"))
    acc = GapAccumulator()
    for prompt, response in zip(df.prompt, df.response):
        # The response is tokenised once and truncated to R tokens; both models score those ids (docs/methods.md §2.1).
        aligned_ids, base_ids, resp = view_ids(tok_s, prompt, response, template, pact["response_tokens"])
        if not resp:
            continue
        acc.add(response_probs(m_s, aligned_ids, resp), response_probs(m_b, base_ids, resp))
    D, pbar, n = acc.result()
    ids = select_safety_tokens(D, pbar, pact["k"], pact["token_select"])
    w = safety_weights(D[ids], pact["weights"])
    table = pd.DataFrame(
        {
            "rank": np.arange(len(ids), dtype=np.int32),
            "token_id": ids.numpy().astype(np.int64),
            "token": [tok_s.decode([int(i)]) for i in ids],
            "gap": D[ids].numpy(),
            "mean_prob_aligned": pbar[ids].numpy(),
            "weight": w.numpy(),
        }
    )[TOKEN_COLUMNS]
    write_parquet(
        table,
        out,
        metadata={"n_samples": n, "k": pact["k"], "token_select": pact["token_select"], "weights": pact["weights"]},
    )
    log.info("safety tokens from %d responses: %s", n, ", ".join(repr(t) for t in table.token.head(15)))
