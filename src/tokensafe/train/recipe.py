"""A config recipe (``finetune.recipe``, ``toss.recipe``, ``world.*.train``) as the loop's TrainSettings."""

from __future__ import annotations

from tokensafe.train.loop import TrainSettings


def recipe(cfg: dict, seed: int) -> TrainSettings:
    keys = (
        "lr",
        "batch_size",
        "steps",
        "epochs",
        "grad_accum",
        "weight_decay",
        "grad_clip",
        "schedule",
        "warmup_steps",
        "step_gamma",
    )
    kw = {k: cfg[k] for k in keys if k in cfg}
    if "betas" in cfg:
        kw["betas"] = tuple(cfg["betas"])
    return TrainSettings(seed=seed, **kw)
