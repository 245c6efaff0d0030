"""A compact training loop shared by every method (base pretraining, alignment, LoRA fine-tunes).

Deliberately not ``transformers.Trainer``: each method here is one loss function over a batch that may
carry cached reference signals, and a 40-line loop keeps that explicit and starts in well under a
second on the tiny default models. ``accelerate`` does device placement, bf16 autocast on GPUs and data
parallelism when the script is started with ``accelerate launch``/``torchrun``. A job's checkpoints
(``tokensafe.train.checkpoint``, docs/checkpoints.md) make a killed run resume where it stopped, to the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from tokensafe.runtime.job import end_startup
from tokensafe.runtime.preemption import STOPPED_STATUS, StopRequest
from tokensafe.train.batching import collate
from tokensafe.train.checkpoint import Checkpoints, examples_digest

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
    checkpoints: Checkpoints | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``examples``; returns one dict of logged values per logged step.

    With ``checkpoints`` (:func:`tokensafe.train.checkpoint.checkpointed`), the loop resumes from a checkpoint of
    the same run, saves one as its policy says, and on SIGTERM saves one at the next step boundary and exits with
    status 143; the resumed run ends with the same weights, byte for byte, as an uninterrupted one (CPU).
    """
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
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    params = list(trainable.values())
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, len(loader) // settings.grad_accum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(settings, total, steps_per_epoch))
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    model.train()

    run = _Run(accelerator, opt, sched, loader, generator, trainable)
    saver = _Saver(checkpoints, accelerator, log) if checkpoints is not None else None
    if saver is not None:
        fingerprint = checkpoints.fingerprint(
            loop_settings=dataclasses.asdict(settings),
            examples=examples_digest(examples),
            trainable=[[n, list(p.shape), str(p.dtype)] for n, p in trainable.items()],
            loss=f"{loss_fn.__module__}.{getattr(loss_fn, '__qualname__', type(loss_fn).__qualname__)}",
            batching=[pad_id, total, accelerator.num_processes, accelerator.device.type, accelerator.mixed_precision],
        )
        saver.fingerprint = fingerprint
        state = checkpoints.load(fingerprint, log)
        if state is not None:
            run.restore(state)
            log(f"resumed from checkpoint {checkpoints.file} at step {run.step} of {total}")
    t0 = time.time() - run.elapsed
    with StopRequest() if saver is not None else contextlib.nullcontext() as stop:
        while run.step < total:
            if run.skip:  # the epoch a checkpoint was saved in: its shuffle again, minus the batches it had used
                generator.set_state(run.epoch_generator)
            else:
                run.epoch_generator, run.batches = generator.get_state(), 0
            for batch in loader:
                run.batches += 1
                if run.skip:
                    run.skip -= 1
                    continue
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
                run.step += 1
                run.running.append(float(loss.detach()))
                for k, v in stats.items():
                    run.running_stats.setdefault(k, []).append(float(v))
                if run.step % settings.log_every == 0 or run.step == total:
                    # every logged value is the mean over the steps since the last log line
                    row = {
                        "step": run.step,
                        "loss": sum(run.running) / len(run.running),
                        "lr": sched.get_last_lr()[0],
                        "elapsed_s": round(time.time() - t0, 2),
                        **{k: sum(v) / len(v) for k, v in run.running_stats.items()},
                    }
                    run.history.append(row)
                    run.running, run.running_stats = [], {}
                    if accelerator.is_main_process:
                        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
                if saver is not None:
                    run.elapsed = time.time() - t0
                    saver.at_step_boundary(run, total, stop.requested)
                if run.step >= total:
                    break
            run.epoch += 1
    model.eval()
    accelerator.wait_for_everyone()
    return run.history


@dataclass
class _Run:
    """The loop's state between optimiser steps: everything a checkpoint holds beside the RNG states."""

    accelerator: Any
    opt: Any
    sched: Any
    loader: Any
    generator: torch.Generator
    trainable: dict[str, torch.nn.Parameter]
    step: int = 0
    epoch: int = 0
    batches: int = 0  # batches of the current epoch consumed so far
    skip: int = 0  # batches still to skip after a resume
    epoch_generator: torch.Tensor | None = None  # the shuffle generator's state when the epoch began
    elapsed: float = 0.0
    running: list[float] = field(default_factory=list)
    running_stats: dict[str, list[float]] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batches": self.batches,
            "epoch_generator": self.epoch_generator,
            "accumulate_step": self.accelerator.step,
            "loader_iteration": getattr(self.loader, "iteration", 0),
            "elapsed_s": self.elapsed,
            "running": list(self.running),
            "running_stats": {k: list(v) for k, v in self.running_stats.items()},
            "history": list(self.history),
            "trainable": {n: p.detach().to("cpu", copy=True) for n, p in self.trainable.items()},
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for n, p in self.trainable.items():
                p.copy_(state["trainable"][n].to(p.device))
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.elapsed = state["step"], state["epoch"], state["elapsed_s"]
        self.batches = self.skip = state["batches"]
        self.epoch_generator = state["epoch_generator"]
        self.accelerator.step = state["accumulate_step"]
        if hasattr(self.loader, "iteration"):
            self.loader.iteration = state["loader_iteration"]
        self.running, self.running_stats = state["running"], state["running_stats"]
        self.history = state["history"]
        set_rng_states(state["rng"][self.accelerator.process_index])


class _Saver:
    """Saves the loop's state when the policy or a SIGTERM says so (all processes agree on when), exits on SIGTERM."""

    def __init__(self, checkpoints: Checkpoints, accelerator, log: Callable[[str], None]) -> None:
        self.checkpoints, self.accelerator, self.log = checkpoints, accelerator, log
        self.fingerprint: dict[str, str] = {}
        self.last = time.monotonic()

    def _due(self, step: int) -> bool:
        policy = self.checkpoints.policy
        by_steps = policy.every_steps > 0 and step % policy.every_steps == 0
        return by_steps or (policy.every_minutes > 0 and time.monotonic() - self.last >= 60 * policy.every_minutes)

    def at_step_boundary(self, run: _Run, total: int, stop: bool) -> None:
        due = run.step < total and self._due(run.step)
        if self.accelerator.num_processes > 1:  # one decision for every process: the time and the signal are local
            from accelerate.utils import reduce

            flags = reduce(torch.tensor([float(due), float(stop)], device=self.accelerator.device), "sum")
            due, stop = bool(flags[0] > 0), bool(flags[1] > 0)
        if not (due or stop):
            return
        rng = [rng_states()]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rng = gather_object(rng)
        if self.accelerator.is_main_process:
            self.checkpoints.save({**run.state(), "rng": rng}, self.fingerprint)
        self.last = time.monotonic()
        if stop:
            self.accelerator.wait_for_everyone()
            self.log(
                f"SIGTERM: checkpoint of step {run.step} of {total} written to {self.checkpoints.file}; "
                f"exiting with status {STOPPED_STATUS} (a rerun resumes from it)"
            )
            raise SystemExit(STOPPED_STATUS)


def rng_states() -> dict[str, Any]:
    """The torch (CPU and CUDA), Python and numpy RNG states of this process."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss],
    }


def set_rng_states(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
