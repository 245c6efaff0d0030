"""When a training job writes its checkpoint, and the SIGTERM that makes it stop at the next step (docs/checkpoints.md).

The config's ``checkpoint`` section reaches the jobs through the environment (``TOKENSAFE_CHECKPOINT``, set by
:func:`tokensafe.plan.job_environment.pin_job_environment` in the process that plans them), not through a rule's
params: how often a job saves its progress changes no output, so it must rerun nothing (docs/reruns.md).
Torch-free: the planning process imports it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

ENV_CHECKPOINT = "TOKENSAFE_CHECKPOINT"
# A GPU cluster's preemption costs at most this much training; a CPU-sized job never reaches it.
DEFAULT_EVERY_MINUTES = 10.0
DEFAULT_EVERY_STEPS = 0  # 0: no step-count trigger
STOPPED_STATUS = 143  # 128 + SIGTERM, what a process killed by SIGTERM reports


@dataclass(frozen=True)
class CheckpointPolicy:
    every_steps: int = DEFAULT_EVERY_STEPS  # 0: never by step count
    every_minutes: float = DEFAULT_EVERY_MINUTES  # 0: never by time

    def to_env(self) -> str:
        return json.dumps({"every_steps": self.every_steps, "every_minutes": self.every_minutes}, sort_keys=True)


def policy_of(config: Mapping) -> CheckpointPolicy:
    """The config's ``checkpoint`` section (defaults for missing keys, as the schema's)."""
    section = config.get("checkpoint") or {}
    return CheckpointPolicy(
        int(section.get("every_steps", DEFAULT_EVERY_STEPS)), float(section.get("every_minutes", DEFAULT_EVERY_MINUTES))
    )


def read_policy(environ: Mapping[str, str] | None = None) -> CheckpointPolicy:
    """The policy the planning process exported, or the defaults (a training call outside the workflow)."""
    raw = (os.environ if environ is None else environ).get(ENV_CHECKPOINT)
    if not raw:
        return CheckpointPolicy()
    try:
        return policy_of({"checkpoint": json.loads(raw)})
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{ENV_CHECKPOINT}={raw!r}: expected JSON like {CheckpointPolicy().to_env()} ({e})") from None


class StopRequest:
    """Within its ``with`` block, SIGTERM (SLURM's warning before a preemption or the time limit kills the job) only
    sets :attr:`requested`; the training loop checks it at each step boundary, writes a checkpoint and exits with
    :data:`STOPPED_STATUS`. The previous handler comes back when the block ends. Outside the main thread (where
    Python cannot install handlers) it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, _frame) -> None:
        self.requested = True

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
