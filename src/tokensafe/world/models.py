"""The embedded world's tiny models: a base LM pretrained from scratch and an aligned chat model.

Both are ``LlamaForCausalLM`` built from a config and saved as ordinary Hugging Face folders, so later
stages load them with the Auto classes exactly as they would a hub model.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tokensafe.train.batching import make_example
from tokensafe.train.checkpoint import Checkpoints
from tokensafe.train.lm_losses import lm_loss
from tokensafe.train.loop import TrainSettings, train
from tokensafe.world.tokenizer import SPECIAL


def new_causal_lm(
    tokenizer, *, hidden: int, layers: int, heads: int, intermediate: int, max_positions: int, seed: int
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)


def document_examples(tokenizer, texts: list[str], max_length: int) -> list[dict]:
    """Full-sequence language-modelling examples: BOS + text + EOS, every token labelled.

    A text that starts with the assistant tag is an answer without its conversation and gets no BOS,
    exactly like PACT's no-prompt view of an answer.
    """
    out = []
    for text in texts:
        bos = [] if text.startswith(SPECIAL["assistant"]) else [tokenizer.bos_token_id]
        ids = bos + tokenizer(text, add_special_tokens=False)["input_ids"][: max_length - 2] + [tokenizer.eos_token_id]
        out.append(make_example(ids, ids))
    return out


def fit(
    model,
    examples: list[dict],
    settings: TrainSettings,
    tokenizer,
    log: Callable[[str], None],
    loss_fn=lm_loss,
    checkpoints: Checkpoints | None = None,
) -> list[dict]:
    return train(model, examples, loss_fn, settings, pad_id=tokenizer.pad_token_id, log=log, checkpoints=checkpoints)


def param_count(model) -> int:
    return int(sum(np.prod(p.shape) for p in model.parameters()))
