"""Batched generation with the transformers backend (any machine; greedy by default)."""

from __future__ import annotations

import logging
from typing import Callable

import torch

from tokensafe.chat import stop_token_ids
from tokensafe.data.lengths import encode_for_generation, model_positions_of

log = logging.getLogger("tokensafe")


def generation_kwargs(cfg: dict) -> dict:
    """Map the config's generation block onto ``model.generate`` arguments."""
    kw = {"max_new_tokens": int(cfg["max_new_tokens"]), "do_sample": not cfg.get("greedy", True)}
    if kw["do_sample"]:
        kw.update(temperature=float(cfg.get("temperature", 1.0)), top_p=float(cfg.get("top_p", 1.0)))
    if cfg.get("repetition_penalty", 1.0) != 1.0:
        kw["repetition_penalty"] = float(cfg["repetition_penalty"])
    return kw


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    template: str,
    cfg: dict,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    what: str = "prompts",
    rows: list[int] | None = None,
) -> list[str]:
    """Answer each prompt; returns the decoded continuations (special tokens stripped) in input order.

    A prompt that leaves the model's positions too few for ``max_new_tokens`` is an error naming ``what`` and its
    row (``rows``: the row numbers in its file), or with ``cfg["truncate_long_prompts"]`` cut to fit
    (tokensafe.data.lengths)."""
    if not prompts:
        raise ValueError("no prompts to generate from")
    torch.manual_seed(int(cfg.get("seed", 0)))
    device = next(model.parameters()).device
    kw = generation_kwargs(cfg)
    encoded, cut = encode_for_generation(
        tokenizer,
        prompts,
        template,
        model_positions_of(model),
        kw["max_new_tokens"],
        bool(cfg.get("truncate_long_prompts", False)),
        what,
        rows,
    )
    if cut:
        log.info("%s: %d of %d prompts cut to fit the model's positions", what, cut, len(prompts))
    # Longest first keeps padding small; results are put back in input order.
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    pad = tokenizer.pad_token_id
    stop = stop_token_ids(tokenizer, template)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        n = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), n), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), n), dtype=torch.long)
        for row, i in enumerate(idx):  # left padding so every continuation starts at column n
            ids[row, n - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, n - len(encoded[i]) :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            pad_token_id=pad,
            eos_token_id=stop[0] if len(stop) == 1 else stop,
            **kw,
        )
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[row, n:], skip_special_tokens=True).strip()
        if progress:
            progress(min(start + batch_size, len(order)), len(order))
    return out
