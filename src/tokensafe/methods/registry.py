"""Every fine-tuning method tokensafe knows, and how the finetune stage builds its objective.

:data:`METHODS` is the one list of method names: the config schema takes its method enum from it
(``tokensafe.config.load_schema``), the workflow plans each method's settings and extra inputs from it, and
the finetune stage resolves a method's builder from it. Adding a method is a module in its family's folder
(``tokensafe.methods.<family>``) and one entry here (docs/architecture.md shows it): the entry also says
which config section defines the method's settings (hashed into every result row: a change reruns exactly
its runs) and which extra files its fine-tune reads (a mask, cached reference signals), so the workflow
plans a new method from this entry alone.

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
from tokensafe.rerun import stage_keys

if TYPE_CHECKING:
    import pandas as pd

    from tokensafe.train.loop import LossFn


SettingsFn = Callable[[dict], dict]  # config -> the method's settings
InputsFn = Callable[[dict, str, str], dict]  # (config, ratio tag, seed) -> {input name: path}


@dataclass(frozen=True)
class Method:
    family: str  # sft | toss | pact | baselines: the folder under tokensafe.methods and the rule file
    builder: str  # "module:function" that builds the FinetunePlan
    data_roles: tuple[str, ...] = ()  # data roles (data.<role>) it reads besides the fine-tuning and test sets
    # What defines the method besides the shared recipe: a config section ("baselines.asft", copied whole) or a
    # function of the config; None: nothing. Hashed into every result row (FinetuneContext.method_settings).
    settings: str | SettingsFn | None = None
    # Files its fine-tune reads besides the fine-tuning set and the aligned model (FinetuneContext.inputs), made by
    # its family's rules; None: none.
    inputs: InputsFn | None = None


# Where the method families' preparation rules write (workflow/rules/<family>.smk reads these).
TOSS_DIR = "results/toss"
PACT_DIR = "results/pact"
BASELINE_DIR = "results/baselines"


# What every fine-tuned run reads (the fine-tuning set's task and poison pools) and what every run, the untrained
# aligned model ``initial`` included, is evaluated on.
TRAINING_ROLES = ("task", "poison")
EVAL_ROLES = ("task_eval", "harmful_eval")
TOSS_ROLES = ("harmful_ref", "utility_ref")


def toss_settings(config: dict) -> dict:
    """TOSS: the mask's size and selection, the reference models' LoRA and recipe, the loss dumps' chunk size."""
    t = config["toss"]
    return {
        "d": t["d"],
        "selection": t["selection"],
        "lora": t["lora"],
        "recipe": t["recipe"],
        "chunk_size": t.get("chunk_size", 1024),
    }


def toss_pro_settings(config: dict) -> dict:
    return {**toss_settings(config), "rounds": config["toss"]["pro"]["rounds"], "k": config["toss"]["pro"]["k"]}


def toss_mask(last_round: Callable[[dict], int]) -> InputsFn:
    """The mask of a round (TOSS: round 0; TOSS-Pro: its last round, toss.pro.rounds)."""
    return lambda config, ratio, seed: {"mask": f"{TOSS_DIR}/p{ratio}/s{seed}/round{last_round(config)}/mask.parquet"}


def pact_settings(rung: dict) -> SettingsFn:
    """A PACT rung's fine-tune reads the config["pact"] keys of its parts of the objective only."""
    return lambda config: stage_keys.pick(config["pact"], stage_keys.pact_finetune_keys(rung))


def pact_signals(config: dict, ratio: str, seed: str) -> dict:
    """The safety tokens and the frozen reference's cached logits on them (rungs with safety tokens)."""
    return {
        "safety_tokens": f"{PACT_DIR}/safety_tokens.parquet",
        "reference": f"{PACT_DIR}/p{ratio}/s{seed}/reference.safetensors",
    }


def _baseline(name: str, builder: str, data_roles: tuple[str, ...] = (), inputs: InputsFn | None = None) -> Method:
    """A baseline: its settings are its section baselines.<name>."""
    return Method("baselines", builder, data_roles, f"baselines.{name}", inputs)


def _projectors(config: dict, ratio: str, seed: str) -> dict:
    """The alignment subspace's projectors (SafeLoRA, AsFT), one file for every run."""
    return {"projectors": f"{BASELINE_DIR}/projectors.pt"}


METHODS: dict[str, Method] = {
    "sft": Method("sft", "tokensafe.methods.sft:build_sft"),
    "toss": Method(
        "toss", "tokensafe.methods.toss.selective_sft:build_toss", TOSS_ROLES, toss_settings, toss_mask(lambda c: 0)
    ),
    "toss_pro": Method(
        "toss",
        "tokensafe.methods.toss.selective_sft:build_toss",
        TOSS_ROLES,
        toss_pro_settings,
        toss_mask(lambda c: c["toss"]["pro"]["rounds"]),
    ),
    # The PACT ablation ladder, full-vocabulary KL first and full PACT last (tokensafe.methods.pact.ladder).
    # A rung with safety tokens reads the safety prompts they are found from (full-vocabulary KL does not).
    **{
        m: Method(
            "pact",
            "tokensafe.methods.pact.regularized_sft:build_pact",
            ("safety_prompts",) * rung["tokens"],
            pact_settings(rung),
            pact_signals if rung["tokens"] else None,
        )
        for m, rung in LADDER.items()
    },
    "constrained_sft": _baseline(
        "constrained_sft",
        "tokensafe.methods.baselines.constrained:build_constrained",
        inputs=lambda config, ratio, seed: {
            "reference_losses": f"{BASELINE_DIR}/p{ratio}/s{seed}/aligned_losses.parquet"
        },
    ),
    "random_mask": _baseline("random_mask", "tokensafe.methods.baselines.token_masks:build_random_mask"),
    "prefix_mask": _baseline("prefix_mask", "tokensafe.methods.baselines.token_masks:build_prefix_mask"),
    "safety_mix": _baseline(
        "safety_mix",
        "tokensafe.methods.baselines.safety_mix:build_safety_mix",
        ("safety_demos",),
        lambda config, ratio, seed: {"safety_demos": "results/data/safety_demos.parquet"},
    ),
    "safelora": _baseline("safelora", "tokensafe.methods.baselines.subspace:build_safelora", inputs=_projectors),
    "asft": _baseline("asft", "tokensafe.methods.baselines.subspace:build_asft", inputs=_projectors),
}


def method_settings(config: dict, method: str) -> dict:
    """The settings that define ``method`` (its entry's ``settings``), as hashed into its runs' rows."""
    spec = METHODS[method].settings
    if spec is None:
        return {}
    if callable(spec):
        return spec(config)
    section = config
    for key in spec.split("."):
        section = section[key]
    return dict(section)


def finetune_extra_inputs(config: dict, method: str, ratio: str, seed: str) -> dict:
    """The extra files a fine-tune of ``method`` at (ratio tag, seed) reads: {name: path} (its entry's ``inputs``)."""
    inputs = METHODS[method].inputs
    return inputs(config, ratio, seed) if inputs else {}


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
