"""A compact training loop shared by every method (base pretraining, alignment, LoRA fine-tunes).

Deliberately not ``transformers.Trainer``: each method here is one loss function over a batch that may
carry cached reference signals, and a 40-line loop keeps that explicit and starts in well under a
second on the tiny default models. ``accelerate`` does device placement, bf16 autocast on GPUs and data
parallelism when the script is started with ``accelerate launch``/``torchrun``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from tokensafe.runtime.job import end_startup
from tokensafe.train.batching import collate

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TrainSettings:
    lr: float
    batch_size: int = 32
    steps: int | None = None  # optimizer steps; exactly one of steps / epochs
    epochs: float | None = None
    grad_accum: int = 1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    schedule: str = "constant"  # constant | cosine | step_per_epoch
    warmup_steps: int = 0
    step_gamma: float = 0.85  # StepLR factor per epoch (PACT's recipe)
    seed: int = 0
    log_every: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def total_steps(self, n_examples: int) -> int:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        if self.steps is not None:
            return int(self.steps)
        per_epoch = math.ceil(n_examples / (self.batch_size * self.grad_accum))
        return max(1, math.ceil(self.epochs * per_epoch))


def _lr_lambda(settings: TrainSettings, total: int, steps_per_epoch: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / settings.warmup_steps) if settings.warmup_steps else 1.0
        if settings.schedule == "constant":
            return warm
        if settings.schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if settings.schedule == "step_per_epoch":
            return warm * settings.step_gamma ** (step // max(1, steps_per_epoch))
        raise ValueError(f"unknown schedule {settings.schedule!r}; allowed: constant, cosine, step_per_epoch")

    return f


def train(
    model: torch.nn.Module,
    examples: list[dict[str, Any]],
    loss_fn: LossFn,
    settings: TrainSettings,
    pad_id: int,
    log: Callable[[str], None] = print,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``examples``; returns one dict of logged values per logged step."""
    from accelerate import Accelerator  # imported here: only training pays its start-up cost

    if not examples:
        raise ValueError("no training examples")
    end_startup()  # training is the job's work phase: the collector runs again (see tokensafe.runtime.job)
    torch.manual_seed(settings.seed)
    accelerator = Accelerator(
        gradient_accumulation_steps=settings.grad_accum,
        mixed_precision="bf16" if torch.cuda.is_available() else "no",
    )
    total = settings.total_steps(len(examples))
    generator = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(
        examples,
        batch_size=settings.batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=lambda b: collate(b, pad_id),
        drop_last=len(examples) >= settings.batch_size,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, len(loader) // settings.grad_accum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(settings, total, steps_per_epoch))
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    model.train()

    history: list[dict[str, float]] = []
    step, t0, running, running_stats = 0, time.time(), [], {}
    while step < total:
        for batch in loader:
            with accelerator.accumulate(model):
                loss, stats = loss_fn(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.grad_clip:
                    accelerator.clip_grad_norm_(params, settings.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            step += 1
            running.append(float(loss.detach()))
            for k, v in stats.items():
                running_stats.setdefault(k, []).append(float(v))
            if step % settings.log_every == 0 or step == total:
                # every logged value is the mean over the steps since the last log line
                row = {
                    "step": step,
                    "loss": sum(running) / len(running),
                    "lr": sched.get_last_lr()[0],
                    "elapsed_s": round(time.time() - t0, 2),
                    **{k: sum(v) / len(v) for k, v in running_stats.items()},
                }
                history.append(row)
                running, running_stats = [], {}
                if accelerator.is_main_process:
                    log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if step >= total:
                break
    model.eval()
    accelerator.wait_for_everyone()
    return history
