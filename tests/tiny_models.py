"""The tests' one tiny-model factory: a seeded Llama built from a config (no download, a few ms to build)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(
    vocab_size: int = 50,
    *,
    hidden: int = 16,
    intermediate: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 64,
    seed: int | None = 0,
    **config,
) -> LlamaForCausalLM:
    """A ``LlamaForCausalLM`` in eval mode; ``seed=None`` leaves torch's generator as it is."""
    if seed is not None:
        torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        **config,
    )
    return LlamaForCausalLM(cfg).eval()
