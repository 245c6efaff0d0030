"""Every training stage a config plans, with its rows, optimiser steps and token budget.

A stage that trains for a handful of optimiser steps is a wasted GPU run: a LoRA adapter at lr 1e-5 after
16 steps is barely off its start, so whatever reads it (TOSS's scores, a fine-tuned model's ASR) measures
noise. :func:`step_problems` refuses such a config before any job, naming the stage and what to change;
``python -m tokensafe.config`` prints :func:`format_table`.

Steps follow the training loop (:meth:`tokensafe.train.loop.TrainSettings.total_steps`): ``steps`` when the
recipe gives it, else ``ceil(epochs * ceil(rows / (batch_size * grad_accum)))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tokensafe import modelref

# The floor outside the embedded world (plan.min_optimizer_steps); the embedded world's tiny models are exempt.
DEFAULT_MIN_STEPS = 100


def method_recipe(finetune: dict, method: str) -> dict:
    """The fine-tuning recipe of ``method``: ``finetune.recipe`` with the keys of its ``method_recipes``
    entry replaced. A run length in the override (``steps`` or ``epochs``) replaces the other one."""
    override = (finetune.get("method_recipes") or {}).get(method, {})
    base = {
        k: v
        for k, v in finetune["recipe"].items()
        if not ({"steps", "epochs"} & set(override) and k in ("steps", "epochs"))
    }
    return {**base, **override}


@dataclass(frozen=True)
class TrainingStage:
    stage: str  # rule (and what it trains), e.g. "finetune sft", "toss_reference harmful"
    rows: int | None  # training rows; None where they are unknown at planning (a hub source without a limit)
    recipe_key: str  # the config key of the recipe, named in messages
    recipe: dict
    max_length: int | None  # tokens per row at most (None: the recipe's own model, e.g. the embedded world)
    rows_from: str  # where the row count comes from, named in messages
    checked: bool = True  # held to the minimum (the embedded world's own models are not)

    @property
    def batch(self) -> int:
        return int(self.recipe["batch_size"]) * int(self.recipe.get("grad_accum", 1))

    @property
    def steps(self) -> int | None:
        if "steps" in self.recipe:
            return int(self.recipe["steps"])
        if self.rows is None:
            return None
        return max(1, math.ceil(float(self.recipe["epochs"]) * math.ceil(self.rows / self.batch)))

    @property
    def sequences(self) -> int | None:
        """Rows seen in training (a sequence per row and epoch)."""
        return None if self.steps is None else self.steps * self.batch

    @property
    def max_tokens(self) -> int | None:
        """An upper bound on the tokens processed: every sequence at max_length."""
        if self.sequences is None or self.max_length is None:
            return None
        return self.sequences * self.max_length

    def how(self) -> str:
        if "steps" in self.recipe:
            return f"{self.recipe_key}.steps = {self.steps}"
        if self.rows is None:
            return f"{self.rows_from}: rows unknown at planning"
        return (
            f"{self.rows} rows x {self.recipe['epochs']} epochs / batch {self.batch} "
            f"({self.recipe['batch_size']} x grad_accum {self.recipe.get('grad_accum', 1)})"
        )


def source_rows(config: dict, rows: dict[str, int]) -> dict[str, int | None]:
    """Rows of each data role as the jobs will read them: loaded local sources (``rows``, filled by
    :func:`tokensafe.data.sources.check_sources`), the embedded world's sizes, or a hub source's limit."""
    from tokensafe.data.roles import ROLES
    from tokensafe.world.corpus import WorldSizes

    sizes = WorldSizes()
    out: dict[str, int | None] = {}
    for name in ROLES:
        spec = config["data"].get(name, "embedded")
        if name in rows:
            out[name] = rows[name]
        elif spec == "embedded":
            out[name] = getattr(sizes, name, None)
        else:
            out[name] = spec.get("limit") if isinstance(spec, dict) else None
    return out


def training_stages(config: dict, rows: dict[str, int] | None = None) -> list[TrainingStage]:
    """The training stages the config plans, in DAG order (world models, references, fine-tunes)."""
    from tokensafe.methods.registry import METHODS

    roles = source_rows(config, rows or {})
    stages: list[TrainingStage] = []
    embedded = modelref.is_embedded(config["models"]["aligned"])
    if embedded:
        world = config.get("world", {})
        for name in ("pretrain", "align", "guard", "judge"):
            if name in world:
                stages.append(TrainingStage(f"world_{name}", None, f"world.{name}", world[name], None, "", False))
    max_len = config["max_length"]
    methods = list(config["methods"])
    families = {METHODS[m].family for m in methods if m in METHODS}
    if "toss" in families:
        toss = config["toss"]
        for kind in ("harmful", "utility"):
            stages.append(
                TrainingStage(
                    f"toss_reference {kind}",
                    roles[f"{kind}_ref"],
                    "toss.recipe",
                    toss["recipe"],
                    max_len,
                    f"data.{kind}_ref",
                    not embedded,
                )
            )
        if "toss_pro" in methods:
            k, harmful = toss["pro"]["k"], roles["harmful_ref"]
            for t in range(1, toss["pro"]["rounds"] + 1):
                # round t retrains the harmful model on D^h plus the k picks of each round so far
                n = None if harmful is None else harmful + t * min(k, config["n_finetune"])
                stages.append(
                    TrainingStage(
                        f"toss_pro_retrain round {t}",
                        n,
                        "toss.recipe",
                        toss["recipe"],
                        max_len,
                        "data.harmful_ref + toss.pro.k per round",
                        not embedded,
                    )
                )
    for m in methods:
        n = config["n_finetune"]
        if m == "safety_mix":
            n += config["baselines"]["safety_mix"]["n"]
        key = (
            f"finetune.method_recipes.{m}"
            if m in (config["finetune"].get("method_recipes") or {})
            else "finetune.recipe"
        )
        stages.append(
            TrainingStage(
                f"finetune {m}", n, key, method_recipe(config["finetune"], m), max_len, "n_finetune", not embedded
            )
        )
    return stages


def min_steps(config: dict) -> int:
    return int((config.get("plan") or {}).get("min_optimizer_steps", DEFAULT_MIN_STEPS))


def step_problems(config: dict, rows: dict[str, int] | None = None) -> list[str]:
    """A line per training stage that would train fewer optimiser steps than ``plan.min_optimizer_steps``."""
    floor = min_steps(config)
    problems = []
    for s in training_stages(config, rows):
        if not s.checked or s.steps is None or s.steps >= floor:
            continue
        fix = (
            f"raise {s.recipe_key}.steps"
            if "steps" in s.recipe
            else f"raise {s.recipe_key}.epochs, lower {s.recipe_key}.batch_size x grad_accum, or give more rows "
            f"({s.rows_from})"
        )
        problems.append(
            f"{s.stage}: {s.steps} optimiser steps ({s.how()}) is under plan.min_optimizer_steps = {floor}: "
            f"{fix}, or lower plan.min_optimizer_steps if this is intended"
        )
    return problems


def format_table(config: dict, rows: dict[str, int] | None = None) -> str:
    """The training stages as a fixed-width table: rows, batch, epochs, steps, sequences, max tokens."""
    head = ("stage", "rows", "batch", "epochs", "steps", "sequences", "max tokens", "recipe")
    body = []
    for s in training_stages(config, rows):
        fmt = lambda v: "?" if v is None else f"{v:,}"  # noqa: E731
        body.append(
            (
                s.stage,
                fmt(s.rows) if s.max_length else "-",
                fmt(s.batch),
                str(s.recipe.get("epochs", "-")),
                fmt(s.steps) + ("" if s.checked or s.steps is None else " (exempt)"),
                fmt(s.sequences),
                fmt(s.max_tokens) if s.max_length else "-",
                s.recipe_key,
            )
        )
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [line(head), line(tuple("-" * w for w in widths)), *map(line, body)]
    out.append(
        f"minimum: plan.min_optimizer_steps = {min_steps(config)} (stages marked exempt are the embedded world's)"
    )
    return "\n".join(out)
