"""Stage: the inputs baselines share (alignment-subspace projectors for SafeLoRA and AsFT)."""

from __future__ import annotations

import logging

import torch

from tokensafe.io import atomic_path
from tokensafe.losses.subspace import projectors_from_models
from tokensafe.train.lora import load_model

log = logging.getLogger("tokensafe")


def write_projectors(aligned: str, base: str, target_modules: list[str], out: str, dtype: str = "auto") -> None:
    """C_l = V V^T / ||V||_F with V = W_aligned - W_base, for every LoRA target layer (spec section 4)."""
    a = load_model(aligned, dtype)
    b = load_model(base, dtype)
    proj = projectors_from_models(a, b, target_modules)
    with atomic_path(out) as tmp:
        torch.save({k: v.cpu() for k, v in proj.items()}, tmp)
    log.info("projectors for %d layers: %s ...", len(proj), ", ".join(list(proj)[:3]))
