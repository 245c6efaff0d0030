"""Every fine-tuning method tokensafe knows, and how the finetune stage builds its objective.

:data:`METHODS` is the one list of method names: the config schema's method enum is tested against it
(``tests/test_registry.py``), the rules read it to know which family prepares a method's inputs, and the
finetune stage resolves a method's builder from it. Adding a method is a module in its family's folder
(``tokensafe.methods.<family>``) and one entry here (docs/architecture.md shows it with ``sft``).

A builder ``(FinetuneContext) -> FinetunePlan`` gets the aligned model with a fresh LoRA adapter and the
fine-tuning set encoded through the shared tokenisation function; it may attach per-token extras (masks,
cached reference signals) to the examples, returns the loss and, optionally, a step to run on the trained
model before it is saved. No torch here: the Snakefile imports this module when it plans jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, Callable

from tokensafe.methods.pact.ladder import LADDER

if TYPE_CHECKING:
    import pandas as pd

    from tokensafe.train.loop import LossFn


@dataclass(frozen=True)
class Method:
    family: str  # sft | toss | pact | baselines: the folder under tokensafe.methods and the rule file
    builder: str  # "module:function" that builds the FinetunePlan
    data_roles: tuple[str, ...] = ()  # data roles (data.<role>) it reads besides the fine-tuning and test sets


# What every fine-tuned run reads (the fine-tuning set's task and poison pools) and what every run, the untrained
# aligned model ``initial`` included, is evaluated on.
TRAINING_ROLES = ("task", "poison")
EVAL_ROLES = ("task_eval", "harmful_eval")
TOSS_ROLES = ("harmful_ref", "utility_ref")


METHODS: dict[str, Method] = {
    "sft": Method("sft", "tokensafe.methods.sft:build_sft"),
    "toss": Method("toss", "tokensafe.methods.toss.selective_sft:build_toss", TOSS_ROLES),
    "toss_pro": Method("toss", "tokensafe.methods.toss.selective_sft:build_toss", TOSS_ROLES),
    # The PACT ablation ladder, full-vocabulary KL first and full PACT last (tokensafe.methods.pact.ladder).
    # A rung with safety tokens reads the safety prompts they are found from (full-vocabulary KL does not).
    **{
        m: Method("pact", "tokensafe.methods.pact.regularized_sft:build_pact", ("safety_prompts",) * rung["tokens"])
        for m, rung in LADDER.items()
    },
    "constrained_sft": Method("baselines", "tokensafe.methods.baselines.constrained:build_constrained"),
    "random_mask": Method("baselines", "tokensafe.methods.baselines.token_masks:build_random_mask"),
    "prefix_mask": Method("baselines", "tokensafe.methods.baselines.token_masks:build_prefix_mask"),
    "safety_mix": Method("baselines", "tokensafe.methods.baselines.safety_mix:build_safety_mix", ("safety_demos",)),
    "safelora": Method("baselines", "tokensafe.methods.baselines.subspace:build_safelora"),
    "asft": Method("baselines", "tokensafe.methods.baselines.subspace:build_asft"),
}


def run_roles(method: str) -> list[str]:
    """The data roles a run of ``method`` reads (``initial``: the evaluation sets only)."""
    if method == "initial":
        return list(EVAL_ROLES)
    return [*TRAINING_ROLES, *EVAL_ROLES, *METHODS[method].data_roles]


def roles_used(methods: list[str]) -> list[str]:
    """Every role some run of a config with these methods reads, in a fixed order (``initial`` always runs)."""
    order = [*TRAINING_ROLES, *EVAL_ROLES, *TOSS_ROLES, "safety_prompts", "safety_demos"]
    used = {r for m in ["initial", *methods] for r in run_roles(m)}
    return [r for r in order if r in used]


def family_methods(family: str) -> list[str]:
    """The methods of one family, in registry order."""
    return [m for m, spec in METHODS.items() if spec.family == family]


@dataclass
class FinetuneContext:
    method: str
    settings: dict[str, Any]  # resolved run settings (method section under settings["method_settings"])
    inputs: dict[str, str]  # extra input files named by the rule (mask, reference signals, ...)
    model: Any  # peft-wrapped aligned model
    tokenizer: Any
    data: pd.DataFrame  # the fine-tuning set (sample_id, prompt, response, is_poison, ...)
    examples: list[dict[str, Any]]  # encoded examples, aligned with ``data`` rows

    @property
    def method_settings(self) -> dict[str, Any]:
        return self.settings.get("method_settings", {})


@dataclass
class FinetunePlan:
    examples: list[dict[str, Any]]
    loss_fn: LossFn
    after_training: Callable[[Any], dict] | None = None  # returns a report stored in training.json
    info: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[FinetuneContext], FinetunePlan]


def builder(method: str) -> Builder:
    """The builder of ``method`` (imports its module, so an unknown method fails before any model loads)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    module, _, name = METHODS[method].builder.partition(":")
    return getattr(import_module(module), name)
