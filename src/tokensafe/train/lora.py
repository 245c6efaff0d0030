"""LoRA adapters (peft) on top of a frozen model, and loading models with or without an adapter."""

from __future__ import annotations

from pathlib import Path

import torch

from tokensafe.modelref import load_name
from tokensafe.runtime.job import end_startup


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` means bf16 on a GPU and fp32 on CPU (bf16 matmuls are slow on most CPUs)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_model(path: str, dtype: str = "auto", adapter: str | None = None, trainable_adapter: bool = False):
    """Load a causal LM (hub id or local folder) and, optionally, a LoRA adapter on top of it."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor weight-loading bars would drown the job logs
    # A missing local folder fails here, by name, before transformers guesses a hub id; 'hub:' is stripped.
    model = AutoModelForCausalLM.from_pretrained(load_name(path), dtype=resolve_dtype(dtype))
    if torch.cuda.is_available():
        model = model.to("cuda")
    if adapter is not None:
        from peft import PeftModel

        if not Path(adapter).exists():
            raise FileNotFoundError(f"adapter path {adapter!r} does not exist")
        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable_adapter)
    model.eval()
    end_startup()  # a stage job's start-up ends with its model loaded (see tokensafe.runtime.job)
    return model


def add_lora(model, r: int, alpha: float, dropout: float, target_modules: list[str] | str, seed: int):
    """Wrap ``model`` with a fresh LoRA adapter; only the adapter's parameters train."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(load_name(path))
    if tok.pad_token_id is None:
        # Llama-3 style tokenizers have no pad token. Reusing EOS is safe here because every attention
        # mask and label in this package is built from sequence lengths, never from ``ids != pad``
        # (docs/methods.md §A15).
        tok.pad_token = tok.eos_token
    return tok
