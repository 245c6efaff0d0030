"""Stage family PACT (spec section 2): safe responses, safety tokens (Eq. 1-2) and cached reference signals.

The frozen reference is the aligned model itself: during LoRA training it equals the trained model with
its adapters disabled, so its logits on a fixed data set never change. They are computed once here, in
both views (full context and no-prompt, spec 2.4), restricted to the safety tokens, and reused in every
epoch and run: exact, not an approximation.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from tokensafe.chat import IGNORE_INDEX, encode_pair, prompt_text
from tokensafe.eval.keyword_judge import is_refusal
from tokensafe.io import atomic_path, read_parquet, write_json, write_parquet
from tokensafe.losses.pact import GapAccumulator, safety_weights, select_safety_tokens, weight_conflicts
from tokensafe.losses.pact_reference import assistant_header, no_prompt_view
from tokensafe.pipeline.finetune import encode_dataset
from tokensafe.train.lora import load_model, load_tokenizer

log = logging.getLogger("tokensafe")

TOKEN_COLUMNS = ["rank", "token_id", "token", "gap", "mean_prob_aligned", "weight"]


def write_safe_responses(aligned: str, prompts_path: str, settings: dict, gen_cfg: dict, keywords: list[str], out: str) -> None:
    """The aligned model answers harmful prompts (greedy).

    With ``filter_refusals`` (default) only answers the refusal-keyword judge calls refusals are kept,
    like the official code's guard filter; without it every non-empty answer is kept.
    """
    from tokensafe.eval.generate import generate

    df = read_parquet(prompts_path, ["prompt"])
    pact = settings["method_settings"]
    df = df.head(pact["n_prompts"])
    tok = load_tokenizer(aligned)
    model = load_model(aligned, settings.get("dtype", "auto"))
    responses = generate(model, tok, list(df.prompt), settings["prompt_template"],
                         {"max_new_tokens": pact["response_tokens"], "greedy": True}, gen_cfg.get("batch_size", 64))
    filt = pact.get("filter_refusals", True)
    keep = [r.strip() != "" and (not filt or is_refusal(r, keywords)) for r in responses]
    out_df = pd.DataFrame({"prompt": df.prompt, "response": responses, "kept": keep})
    if not any(keep):
        raise ValueError("the aligned model refused none of the safety prompts: no safe responses to find safety tokens "
                         "from (is models.aligned really aligned? pact.filter_refusals: false keeps every answer)")
    write_parquet(out_df, out, metadata={"n": len(out_df), "kept": int(sum(keep))})
    log.info("safe responses: kept %d of %d", sum(keep), len(out_df))


def base_prompt(prompt: str) -> str:
    """PACT's plain view for the base model (spec 2.1)."""
    return f"User: {prompt}\n\nAssistant: "


@torch.no_grad()
def response_probs(model, prefix_ids: list[int], resp_ids: list[int]) -> torch.Tensor:
    """Softmax (temperature 1) over the vocabulary at the positions predicting each response token."""
    device = next(model.parameters()).device
    ids = torch.tensor([prefix_ids + resp_ids], device=device)
    logits = model(input_ids=ids).logits[0, len(prefix_ids) - 1 : len(prefix_ids) - 1 + len(resp_ids)]
    return torch.softmax(logits.float(), dim=-1).cpu()


def write_safety_tokens(aligned: str, base: str, responses_path: str, settings: dict, out: str) -> None:
    pact = settings["method_settings"]
    df = read_parquet(responses_path, ["prompt", "response", "kept"])
    df = df[df.kept]
    tok_s = load_tokenizer(aligned)
    tok_b = load_tokenizer(base)
    m_s = load_model(aligned, settings.get("dtype", "auto"))
    m_b = load_model(base, settings.get("dtype", "auto"))
    acc = GapAccumulator()
    for prompt, response in zip(df.prompt, df.response):
        # The response is tokenised once and truncated to R tokens; both models score those ids (spec 2.1).
        resp = tok_s(response, add_special_tokens=False)["input_ids"][: pact["response_tokens"]]
        if not resp:
            continue
        p_s = response_probs(m_s, tok_s(prompt_text(tok_s, prompt, "chat" if tok_s.chat_template else settings["prompt_template"]),
                                         add_special_tokens=False)["input_ids"], resp)
        p_b = response_probs(m_b, tok_b(base_prompt(prompt), add_special_tokens=True)["input_ids"], resp)
        acc.add(p_s, p_b)
    D, pbar, n = acc.result()
    ids = select_safety_tokens(D, pbar, pact["k"], pact["token_select"])
    w = safety_weights(D[ids], pact["weights"])
    table = pd.DataFrame({
        "rank": np.arange(len(ids), dtype=np.int32), "token_id": ids.numpy().astype(np.int64),
        "token": [tok_s.decode([int(i)]) for i in ids], "gap": D[ids].numpy(), "mean_prob_aligned": pbar[ids].numpy(),
        "weight": w.numpy(),
    })[TOKEN_COLUMNS]
    write_parquet(table, out, metadata={"n_samples": n, "k": pact["k"], "token_select": pact["token_select"],
                                        "weights": pact["weights"]})
    log.info("safety tokens from %d responses: %s", n, ", ".join(repr(t) for t in table.token.head(15)))


def header_ids(tok, template: str) -> list[int]:
    """The assistant header of the no-prompt view (spec 2.4) for the configured template."""
    header = assistant_header(tok) if template == "chat" else "Assistant: "
    return list(tok(header, add_special_tokens=False)["input_ids"])


@torch.no_grad()
def write_reference_signals(aligned: str, data_path: str, tokens_path: str, settings: dict, out: str,
                            out_conflicts: str | None = None, info: dict | None = None, batch_size: int = 32) -> None:
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
    head = header_ids(tok, settings["prompt_template"])
    full_rows, post_rows, sids, positions, targets = [], [], [], [], []

    def restricted(ex_list, starts, lengths):
        batch = collate(ex_list, pad_id=tok.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        return [logits[i, s : s + n][:, S.to(device)].float().cpu() for i, (s, n) in enumerate(zip(starts, lengths))]

    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        prompt_lens = [int((e["labels"] == IGNORE_INDEX).sum()) for e in chunk]
        answers = [e["input_ids"][p:] for e, p in zip(chunk, prompt_lens)]
        full = restricted(chunk, [p - 1 for p in prompt_lens], [len(a) for a in answers])
        post_inputs = [{"input_ids": np.asarray(no_prompt_view(head, list(a)), dtype=np.int64),
                        "labels": np.zeros(len(head) + len(a) - 1, dtype=np.int64)} for a in answers]
        post = restricted(post_inputs, [len(head) - 1] * len(chunk), [len(a) for a in answers])
        for j, (f, q, p) in enumerate(zip(full, post, prompt_lens)):
            full_rows.append(f)
            post_rows.append(q)
            sids.append(np.full(len(f), int(df.sample_id.iloc[start + j])))
            positions.append(np.arange(p - 1, p - 1 + len(f)))
            targets.append(np.asarray(answers[j], dtype=np.int64))
    tensors = {
        "full": torch.cat(full_rows), "post": torch.cat(post_rows), "safety_ids": S,
        "sample_id": torch.as_tensor(np.concatenate(sids)), "position": torch.as_tensor(np.concatenate(positions)),
        "token_id": torch.as_tensor(np.concatenate(targets)),
    }
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"data": data_path, "tokens": tokens_path})
    log.info("reference signals: %d answer tokens x %d safety tokens, two views", len(tensors["full"]), len(S))
    if out_conflicts:
        poison = set(df.sample_id[df.is_poison.astype(bool)]) if "is_poison" in df.columns else None
        summary = {**(info or {}), **conflict_summary(tensors["token_id"], tensors["sample_id"], tokens, poison)}
        write_json(summary, out_conflicts)
        log.info("weight conflicts: %d of %d answer positions (%s)", summary["conflicts"], summary["positions"],
                 summary["population"])


def conflict_summary(token_ids: torch.Tensor, sample_ids: torch.Tensor, tokens: pd.DataFrame,
                     poison: set[int] | None, top: int = 5) -> dict:
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
        "positions": int(keep.sum()), "conflicts": int(hit.sum()),
        "share": float(hit.sum()) / max(int(keep.sum()), 1),
        "zero_weight_tokens": int((w <= 0).sum()), "safety_tokens": len(S),
        "tokens": [{"token_id": int(ids[i]), "token": text[int(ids[i])], "count": int(counts[i])} for i in order],
    }
