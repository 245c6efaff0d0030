"""Every job a config plans, with the work it does: the same jobs as Snakemake's DAG (tests compare the counts per
rule with ``snakemake -n``), each with its rule, wildcards, benchmark file and its tokens, optimiser steps and items.

The cost plan (:mod:`tokensafe.plan.cost`) multiplies this work by a throughput table; the resources of each
job (:func:`tokensafe.plan.scheduling.resources_for`) come from the same estimate. Torch-free and cheap: the
Snakefile's resource callables call it once per config.

Token counts are what a job processes: a training row is its prompt and response (at most ``max_length``), a
generation is its prompt and ``max_new_tokens`` (an upper bound: answers may stop earlier). Where the rows' token
lengths come from is :class:`Lengths` (the data card of a run, the loaded files, the embedded world, or an upper
bound); :attr:`Lengths.notes` says which, and the plan prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tokensafe import modelref
from tokensafe.methods.pact.ladder import LADDER
from tokensafe.methods.registry import roles_used
from tokensafe.plan import llm_judge_runs
from tokensafe.plan.runs import all_runs, method_ratios, method_seeds
from tokensafe.plan.sizes import CATALOG_ROWS, WORLD_LENGTHS, WORLD_ROWS, Lengths, lengths, lm_eval_tokens
from tokensafe.plan.training import method_recipe, source_rows
from tokensafe.world.corpus import WorldSizes

# Benchmark file of each rule (benchmarks/<this>.tsv), as its benchmark: directive in workflow/rules/*.smk.
BENCHMARK = {
    "world_data": "world_data",
    "world_tokenizer": "world_tokenizer",
    "world_base": "world_base",
    "world_aligned": "world_aligned",
    "world_guard": "world_guard",
    "world_judge": "world_judge",
    "source_table": "source_table/{source}",
    "mix_finetune_set": "mix_finetune_set/p{ratio}_s{seed}",
    "data_overlap": "data_overlap",
    "data_card": "data_card",
    "toss_reference": "toss_reference/{kind}",
    "toss_utility_losses": "toss_utility_losses/p{ratio}_s{seed}",
    "toss_losses": "toss_losses/p{ratio}_s{seed}_r{round}",
    "toss_mask": "toss_mask/p{ratio}_s{seed}_r{round}",
    "toss_pro_retrain": "toss_pro_retrain/p{ratio}_s{seed}_r{round}",
    "pact_safe_responses": "pact_safe_responses",
    "pact_safety_tokens": "pact_safety_tokens",
    "pact_reference": "pact_reference/p{ratio}_s{seed}",
    "aligned_losses": "aligned_losses/p{ratio}_s{seed}",
    "subspace_projectors": "subspace_projectors",
    "finetune": "finetune/{method}/p{ratio}_s{seed}",
    "generate": "generate/{run}",
    "judge": "judge/{run}",
    "judge_classifier": "judge_classifier/{run}/{classifier}",
    "lm_eval": "lm_eval/{run}",
    "llm_win_rate": "llm_win_rate/{run}/p{ratio}",
    "llm_rubrics": "llm_rubrics/{run}",
    "summary": "summary",
    "report": "report",
    "all": "",  # the target rule: no benchmark, no work
}

# The plan's stage families, in pipeline order: rule -> family.
FAMILY = {
    "world_base": "world models",
    "world_aligned": "world models",
    "world_guard": "world models",
    "world_judge": "world models",
    "world_data": "data",
    "world_tokenizer": "data",
    "source_table": "data",
    "mix_finetune_set": "data",
    "data_overlap": "data",
    "data_card": "data",
    "toss_reference": "TOSS references",
    "toss_utility_losses": "TOSS loss dumps",
    "toss_losses": "TOSS loss dumps",
    "toss_mask": "TOSS masks",
    "toss_pro_retrain": "TOSS-Pro rounds",
    "pact_safe_responses": "PACT",
    "pact_safety_tokens": "PACT",
    "pact_reference": "PACT",
    "aligned_losses": "baseline preparation",
    "subspace_projectors": "baseline preparation",
    "finetune": "fine-tunes",
    "generate": "generation",
    "judge": "safety judges",
    "judge_classifier": "safety judges",
    "llm_win_rate": "LLM judge",
    "llm_rubrics": "LLM judge",
    "lm_eval": "lm-eval utility",
    "summary": "report",
    "report": "report",
    "all": "report",
}
FAMILIES = list(dict.fromkeys(FAMILY.values()))

# The resource family (config resources.<family>) each rule asks from, as in workflow/rules/*.smk. The LLM-judge
# rules ask for the judge family when they may start a local judge server, else the report family's.
RESOURCE_FAMILY = {
    **dict.fromkeys(["world_data", "world_tokenizer", "source_table", "mix_finetune_set"], "data"),
    **dict.fromkeys(["data_overlap", "data_card", "toss_mask"], "data"),
    **dict.fromkeys(["world_base", "world_aligned", "world_guard", "world_judge"], "world"),
    **dict.fromkeys(["toss_reference", "toss_pro_retrain", "finetune"], "train"),
    **dict.fromkeys(["toss_losses", "toss_utility_losses", "pact_safe_responses", "pact_safety_tokens"], "generate"),
    **dict.fromkeys(["pact_reference", "aligned_losses", "subspace_projectors", "generate", "lm_eval"], "generate"),
    **dict.fromkeys(["judge", "judge_classifier"], "judge"),
    **dict.fromkeys(["summary", "report", "all"], "report"),
}


# Parameter counts of public models the presets and docs name (from each model's card / config.json), for hub ids
# that cannot be read locally; a local folder is counted from its config.json.
@dataclass
class Job:
    rule: str
    wildcards: dict[str, str]
    model: str  # the model role whose size sets the throughput: aligned | base | guard | judge | world | none
    train_tokens: float = 0.0
    steps: int = 0
    forward_tokens: float = 0.0  # forward-only scoring (loss dumps, reference logits)
    prompt_tokens: float = 0.0  # generation: prompt tokens
    generated_tokens: float = 0.0  # generation: new tokens (at most max_new_tokens each)
    judged_tokens: float = 0.0  # safety and LLM judges: the conversations they read
    lm_eval_tokens: float = 0.0
    batch_tokens: float = 0.0  # tokens in one forward pass (peak-memory model)

    @property
    def family(self) -> str:
        return FAMILY[self.rule]

    @property
    def benchmark(self) -> str:
        return BENCHMARK[self.rule].format(**self.wildcards)

    @property
    def work(self) -> float:
        """The quantity the throughput table's rate is per second of: tokens of every kind (1 for a job of fixed
        cost: the data and report jobs)."""
        tokens = (
            self.train_tokens
            + self.forward_tokens
            + self.prompt_tokens
            + self.generated_tokens
            + self.judged_tokens
            + self.lm_eval_tokens
        )
        return tokens if tokens > 0 else 1.0


def _cells(config: dict, methods) -> list[tuple[str, str]]:
    """(ratio tag, seed) cells the given methods run at, in (ratio, seed) order."""
    cells = {
        (r, str(s))
        for m in methods
        if m in config["methods"]
        for r in method_ratios(config, m)
        for s in method_seeds(config, m)
    }
    return sorted(cells, key=lambda c: (float(c[0]), int(c[1])))


def _steps(recipe: dict, rows: int | None) -> int:
    batch = int(recipe["batch_size"]) * int(recipe.get("grad_accum", 1))
    if "steps" in recipe:
        return int(recipe["steps"])
    return max(1, math.ceil(float(recipe["epochs"]) * math.ceil((rows or 0) / batch)))


def _train(rule, wc, model, recipe, rows, row_tokens) -> Job:
    steps = _steps(recipe, rows)
    batch = int(recipe["batch_size"]) * int(recipe.get("grad_accum", 1))
    return Job(
        rule,
        wc,
        model,
        train_tokens=steps * batch * row_tokens,
        steps=steps,
        batch_tokens=int(recipe["batch_size"]) * row_tokens,
    )


def plan_jobs(config: dict, rows: dict[str, int] | None = None, lens: Lengths | None = None) -> list[Job]:
    """Every job of the config's DAG, in pipeline order, with its work. ``rows``: the loaded sources' row counts
    (unknown roles fall back to the catalogue's sizes, then their ``limit``)."""
    rows = dict(rows or {})
    for role, spec in config["data"].items():
        if isinstance(spec, dict) and role not in rows and spec.get("path") in CATALOG_ROWS:
            n = CATALOG_ROWS[spec["path"]]
            rows[role] = min(n, spec["limit"]) if spec.get("limit") else n
    n_rows = source_rows(config, rows)
    sizes = WorldSizes()
    for role, attr in WORLD_ROWS.items():
        if config["data"].get(role, "embedded") == "embedded":
            n_rows[role] = attr if isinstance(attr, int) else getattr(sizes, attr)
    lens = lens or lengths(config)
    max_len = config["max_length"]
    methods = list(config["methods"])
    embedded = modelref.is_embedded(config["models"]["aligned"])
    gen = config["generation"]
    jobs: list[Job] = []
    add = jobs.append

    roles = roles_used(methods)
    world_roles = [r for r in roles if config["data"].get(r, "embedded") == "embedded"]
    guard_embedded = modelref.is_embedded(config["models"]["guard"])
    llm_local_embedded = llm_judge_runs.local_server(config) and config["judge"]["llm"].get("model_path") == "embedded"
    world = config.get("world", {})
    if world_roles or embedded or guard_embedded or llm_local_embedded:
        add(Job("world_data", {}, "none"))
    if embedded or guard_embedded or (world_roles and embedded):
        add(Job("world_tokenizer", {}, "none"))
    wrow = float(WORLD_LENGTHS["prompt"] + WORLD_LENGTHS["response"])
    if embedded:
        add(_train("world_base", {}, "base", world["pretrain"], None, float(max_len)))
        add(_train("world_aligned", {}, "aligned", world["align"], None, wrow))
    if guard_embedded:
        add(_train("world_guard", {}, "guard", world["guard"], None, wrow * 2))
    if llm_local_embedded:
        add(_train("world_judge", {}, "judge", world["judge"], None, wrow * 4))

    for role in roles:
        add(Job("source_table", {"source": role}, "none"))
    sets = _cells(config, methods)
    for r, s in sets:
        add(Job("mix_finetune_set", {"ratio": r, "seed": s}, "none"))
    add(Job("data_overlap", {}, "none"))
    add(Job("data_card", {}, "none"))

    n_ft = config["n_finetune"]
    ft_row = lens.row("task", max_len)
    toss = config["toss"]
    if {"toss", "toss_pro"} & set(methods):
        for kind in ("harmful", "utility"):
            role = f"{kind}_ref"
            add(
                _train(
                    "toss_reference", {"kind": kind}, "aligned", toss["recipe"], n_rows[role], lens.row(role, max_len)
                )
            )
        rounds = {(r, s, 0) for r, s in _cells(config, ["toss"])}
        rounds |= {(r, s, t) for r, s in _cells(config, ["toss_pro"]) for t in range(toss["pro"]["rounds"] + 1)}
        rounds = sorted(rounds, key=lambda x: (float(x[0]), int(x[1]), x[2]))
        dump = dict(forward_tokens=n_ft * ft_row, batch_tokens=float(toss.get("chunk_size", 1024)))
        for r, s in _cells(config, ["toss", "toss_pro"]):
            add(Job("toss_utility_losses", {"ratio": r, "seed": s}, "aligned", **dump))
        for r, s, t in rounds:
            add(Job("toss_losses", {"ratio": r, "seed": s, "round": str(t)}, "aligned", **dump))
        for r, s, t in rounds:
            add(Job("toss_mask", {"ratio": r, "seed": s, "round": str(t)}, "none"))
        k, harmful = toss["pro"]["k"], n_rows["harmful_ref"]
        for r, s, t in rounds:
            if t >= 1:
                n = None if harmful is None else harmful + t * min(k, n_ft)
                add(
                    _train(
                        "toss_pro_retrain",
                        {"ratio": r, "seed": s, "round": str(t)},
                        "aligned",
                        toss["recipe"],
                        n,
                        lens.row("harmful_ref", max_len),
                    )
                )

    token_rungs = [m for m in LADDER if LADDER[m]["tokens"] and m in methods]
    if token_rungs:
        p = config["pact"]
        n = min(p["n_prompts"], n_rows["safety_prompts"] or p["n_prompts"])
        per = lens.prompt["safety_prompts"] + p["response_tokens"]
        add(
            Job(
                "pact_safe_responses",
                {},
                "aligned",
                prompt_tokens=n * lens.prompt["safety_prompts"],
                generated_tokens=n * p["response_tokens"],
                batch_tokens=gen["batch_size"] * per,
            )
        )
        add(Job("pact_safety_tokens", {}, "aligned", forward_tokens=2 * n * per, batch_tokens=per))
        weighted = [m for m in LADDER if LADDER[m]["weights"] and m in methods]
        for r, s in _cells(config, token_rungs + weighted):
            add(
                Job(
                    "pact_reference",
                    {"ratio": r, "seed": s},
                    "aligned",
                    forward_tokens=2 * n_ft * ft_row,
                    batch_tokens=ft_row,
                )
            )
    for r, s in _cells(config, ["constrained_sft"]):
        add(
            Job("aligned_losses", {"ratio": r, "seed": s}, "aligned", forward_tokens=n_ft * ft_row, batch_tokens=ft_row)
        )
    if {"safelora", "asft"} & set(methods):
        add(Job("subspace_projectors", {}, "aligned"))

    for m in methods:
        recipe = method_recipe(config["finetune"], m)
        n = n_ft + (config["baselines"]["safety_mix"]["n"] if m == "safety_mix" else 0)
        for r in method_ratios(config, m):
            for s in method_seeds(config, m):
                add(_train("finetune", {"method": m, "ratio": r, "seed": str(s)}, "aligned", recipe, n, ft_row))

    runs = list(dict.fromkeys(r["run"] for r in all_runs(config)))
    h_rows = n_rows["harmful_eval"] or 0
    t_rows = n_rows["task_eval"] or 0
    hp, tp = lens.prompt["harmful_eval"], lens.prompt["task_eval"]
    h_new, t_new = gen["max_new_tokens"], gen.get("task_max_new_tokens", gen["max_new_tokens"])
    for run in runs:
        add(
            Job(
                "generate",
                {"run": run},
                "aligned",
                prompt_tokens=h_rows * hp + t_rows * tp,
                generated_tokens=h_rows * h_new + t_rows * t_new,
                batch_tokens=gen["batch_size"] * (max(hp, tp) + max(h_new, t_new)),
            )
        )
    guard = config["judge"]["guard"]
    judged = h_rows * (hp + h_new)
    for run in runs:
        add(
            Job(
                "judge",
                {"run": run},
                "guard",
                judged_tokens=judged,
                generated_tokens=h_rows * guard["max_new_tokens"],
                batch_tokens=guard["batch_size"] * (hp + h_new),
            )
        )
    for run in runs:
        for name in config["judge"].get("classifiers", []):
            add(
                Job(
                    "judge_classifier",
                    {"run": run, "classifier": name},
                    f"classifier:{name}",
                    judged_tokens=judged,
                    batch_tokens=config["judge"].get("classifier_batch_size", 8) * (hp + h_new),
                )
            )
    bench = config.get("utility_benchmarks") or {}
    tasks = bench.get("tasks") or []
    if tasks:
        tokens = lm_eval_tokens(config, tasks, t_rows, tp, t_new)
        for run in runs:
            add(
                Job(
                    "lm_eval",
                    {"run": run},
                    "aligned",
                    lm_eval_tokens=tokens,
                    batch_tokens=bench.get("batch_size", 16) * 512,
                )
            )
    llm = config["judge"]["llm"]
    limit = llm.get("limit")
    lh = min(h_rows, limit) if limit else h_rows
    lt = min(t_rows, limit) if limit else t_rows
    # A win rate compares two answers per prompt on both sets (in both orders where the template asks); a rubric
    # reads one answer per harmful prompt and rubric.
    win_tokens = 2 * (lh * (hp + 2 * h_new) + lt * (tp + 2 * t_new))
    rubric_tokens = len(llm.get("rubrics") or []) * lh * (hp + h_new)
    for path in llm_judge_runs.llm_outputs(config, "llm_win_rate"):
        run, ratio = path[len("results/runs/") :].rsplit("/llm_win_rate/p", 1)
        add(Job("llm_win_rate", {"run": run, "ratio": ratio[: -len(".parquet")]}, "judge", judged_tokens=win_tokens))
    for path in llm_judge_runs.llm_outputs(config, "llm_rubrics"):
        run = path[len("results/runs/") :].rsplit("/llm_rubrics.parquet", 1)[0]
        add(Job("llm_rubrics", {"run": run}, "judge", judged_tokens=rubric_tokens))
    add(Job("summary", {}, "none"))
    add(Job("report", {}, "none"))
    add(Job("all", {}, "none"))
    return jobs


def job_key(rule: str, wildcards) -> str:
    """The benchmark path of a job from its rule and wildcards (a Snakemake Wildcards object or a dict)."""
    names = {k: str(v) for k, v in dict(wildcards.items() if hasattr(wildcards, "items") else wildcards).items()}
    return BENCHMARK[rule].format(**names)
