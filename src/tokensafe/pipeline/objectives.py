"""Registry of fine-tuning methods: how each turns the fine-tuning set into examples and a loss.

A method registers a builder ``(FinetuneContext) -> FinetunePlan``. The finetune stage loads the
aligned model with a fresh LoRA adapter, encodes the data through the shared tokenisation function and
hands both to the builder, which may attach per-token extras (masks, cached reference signals) to the
examples, returns the loss and, optionally, a step to run on the trained model before it is saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from tokensafe.train.loop import LossFn


@dataclass
class FinetuneContext:
    method: str
    settings: dict[str, Any]          # resolved run settings (method section under settings["method_settings"])
    inputs: dict[str, str]            # extra input files named by the rule (mask, reference signals, ...)
    model: Any                        # peft-wrapped aligned model
    tokenizer: Any
    data: pd.DataFrame                # the fine-tuning set (sample_id, prompt, response, is_poison, ...)
    examples: list[dict[str, Any]]    # encoded examples, aligned with ``data`` rows

    @property
    def method_settings(self) -> dict[str, Any]:
        return self.settings.get("method_settings", {})


@dataclass
class FinetunePlan:
    examples: list[dict[str, Any]]
    loss_fn: LossFn
    after_training: Callable[[Any], dict] | None = None   # returns a report stored in training.json
    info: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[FinetuneContext], FinetunePlan]
REGISTRY: dict[str, Builder] = {}


def register(*names: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        for n in names:
            if n in REGISTRY:
                raise ValueError(f"method {n!r} registered twice")
            REGISTRY[n] = fn
        return fn
    return deco


def builder(method: str) -> Builder:
    import tokensafe.pipeline.methods  # noqa: F401  (registers every method)

    if method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[method]
