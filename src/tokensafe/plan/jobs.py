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

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tokensafe import modelref
from tokensafe.config import ratio_tag
from tokensafe.methods.pact.ladder import LADDER
from tokensafe.methods.registry import METHODS, roles_used
from tokensafe.plan import llm_judge_runs
from tokensafe.plan.runs import all_runs, method_ratios, method_seeds
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
KNOWN_PARAMS = {
    "meta-llama/Meta-Llama-3-8B": 8.03e9,
    "meta-llama/Meta-Llama-3-8B-Instruct": 8.03e9,
    "meta-llama/Llama-3.1-8B": 8.03e9,
    "meta-llama/Llama-3.1-8B-Instruct": 8.03e9,
    "meta-llama/Llama-Guard-3-8B": 8.03e9,
    "meta-llama/Llama-2-7b-hf": 6.74e9,
    "meta-llama/Llama-2-7b-chat-hf": 6.74e9,
    "meta-llama/Llama-2-13b-chat-hf": 13.0e9,
    "Qwen/Qwen2.5-7B": 7.62e9,
    "Qwen/Qwen2.5-7B-Instruct": 7.62e9,
    "Qwen/Qwen2.5-1.5B-Instruct": 1.54e9,
    "Qwen/Qwen2.5-0.5B-Instruct": 0.49e9,
    "cais/HarmBench-Llama-2-13b-cls": 13.0e9,
    "allenai/wildguard": 7.24e9,
    "mistralai/Mistral-7B-Instruct-v0.3": 7.25e9,
}

# Rows of the files `make data` writes (tokensafe.data.fetch.catalog), for a plan made before they are fetched.
CATALOG_ROWS = {
    "data/toss/slimorca_pool.jsonl": 112_000,
    "data/toss/slimorca_eval.jsonl": 500,
    "data/toss/slimorca_utility_ref.jsonl": 22_400,
    "data/toss/harmful_ref.jsonl": 22_400,
    "data/toss/red_team.jsonl": 22_400,  # at least (min_rows); the mixing draws round(P * n_finetune)
    "data/hexphi": 300,  # the 10 public categories x 30
    "data/gsm8k/train.jsonl": 7_473,
    "data/gsm8k/test.jsonl": 1_319,
    "data/gsm8k/utility_ref.jsonl": 1_000,
    "data/advbench/harmful_behaviors.csv": 520,
    "data/strongreject/strongreject_dataset.csv": 313,
}

# The embedded world's rows per role: its WorldSizes field (the safety demonstrations are 200, written by
# tokensafe.world.corpus itself).
WORLD_ROWS = {
    "task": "task_pool",
    "poison": "poison_pool",
    "task_eval": "task_test",
    "harmful_eval": "harmful_eval",
    "harmful_ref": "harmful_ref",
    "utility_ref": "utility_ref",
    "safety_prompts": "safety_prompts",
    "safety_demos": 200,
}
# The embedded world's token lengths (median prompt / response tokens of its tables under the world's tokenizer,
# from the data card of the default run): a world row is about 15 + 20 tokens.
WORLD_LENGTHS = {"prompt": 15, "response": 20}
# lm-evaluation-harness tasks: items per run (the tasks' test / validation sizes) and requests per item (one per
# answer choice for multiple choice). Tokens per request are an assumption (few-shot 0, chat template), stated.
LM_EVAL_TASKS = {
    "mmlu": {"items": 14_042, "requests": 4, "tokens": 120},
    "hellaswag": {"items": 10_042, "requests": 4, "tokens": 110},
    "gsm8k": {"items": 1_319, "requests": 1, "tokens": 900},  # 5-shot prompt + up to 256 generated tokens
    "arc_challenge": {"items": 1_172, "requests": 4, "tokens": 60},
}


def model_params(ref: str, config: dict | None = None, arch_key: str = "model") -> tuple[float, str]:
    """(parameter count, where it came from) of a model reference: the embedded world's config, a local folder's
    config.json, or :data:`KNOWN_PARAMS`. An unknown hub id raises ValueError naming it."""
    if modelref.is_embedded(ref):
        world = (config or {}).get("world", {})
        arch = world.get(arch_key) or world.get("model", {})
        return _llama_params(world.get("vocab_size", 1500), arch["hidden"], arch["layers"], arch["intermediate"]), (
            f"world.{arch_key}"
        )
    name = ref[len(modelref.HUB_PREFIX) :] if ref.startswith(modelref.HUB_PREFIX) else ref
    cfg = Path(name) / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        kv = c["hidden_size"] * c.get("num_key_value_heads", c["num_attention_heads"]) // c["num_attention_heads"]
        n = _llama_params(
            c["vocab_size"],
            c["hidden_size"],
            c["num_hidden_layers"],
            c["intermediate_size"],
            kv,
            c.get("tie_word_embeddings", False),
        )
        return n, f"{cfg}"
    if name in KNOWN_PARAMS:
        return KNOWN_PARAMS[name], "known sizes (tokensafe.plan.jobs.KNOWN_PARAMS)"
    raise ValueError(
        f"model {ref!r}: its size is unknown to the plan: give a local folder (its config.json is read) or add it "
        "to tokensafe.plan.jobs.KNOWN_PARAMS"
    )


def _llama_params(vocab: int, hidden: int, layers: int, inter: int, kv: int | None = None, tied: bool = True) -> float:
    kv = hidden if kv is None else kv
    per_layer = hidden * (hidden + 2 * kv) + hidden * hidden + 3 * hidden * inter + 2 * hidden
    return float(vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden)


@dataclass
class Lengths:
    """Mean prompt / response tokens per data role, and how they were found."""

    prompt: dict[str, float]
    response: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def row(self, role: str, max_length: int) -> float:
        """Tokens of a training row of ``role`` (prompt + response, cut at max_length)."""
        return min(float(max_length), self.prompt[role] + self.response[role])


def lengths(config: dict, tables: dict | None = None, card: dict | None = None) -> Lengths:
    """Token lengths per role: a run's data card (measured with the model's tokenizer), else the loaded tables
    (characters / 4, an approximation), else the embedded world's, else half of max_length each (an upper
    bound for a training row)."""
    from tokensafe.data.roles import ROLES

    prompt, response, how = {}, {}, {}
    half = config["max_length"] / 2
    for role in ROLES:
        spec = config["data"].get(role, "embedded")
        entry = ((card or {}).get("roles") or {}).get(role, {}).get("lengths") or {}
        if entry.get("prompt_tokens"):
            prompt[role] = float(entry["prompt_tokens"]["median"])
            resp = entry.get("response_tokens")
            response[role] = float(resp["median"]) if resp else 0.0
            how[role] = "data card"
        elif tables and role in tables and len(tables[role]):
            df = tables[role]
            prompt[role] = float(df["prompt"].astype(str).str.len().mean()) / 4
            response[role] = float(df["response"].fillna("").astype(str).str.len().mean()) / 4
            how[role] = "characters / 4"
        elif spec == "embedded":
            prompt[role], response[role] = float(WORLD_LENGTHS["prompt"]), float(WORLD_LENGTHS["response"])
            how[role] = "embedded world"
        else:
            prompt[role], response[role] = half, half
            how[role] = "upper bound"
    notes = []
    for kind in ("data card", "characters / 4", "upper bound"):
        roles = [r for r, h in how.items() if h == kind]
        if roles and kind == "upper bound":
            notes.append(
                f"token lengths of {', '.join(roles)} unknown (file not loaded): each prompt and response taken "
                f"as max_length / 2 = {half:g} tokens, an upper bound; a finished data card (results/data/card.json "
                "in --directory) gives the measured lengths"
            )
        elif roles and kind == "characters / 4":
            notes.append(f"token lengths of {', '.join(roles)}: characters / 4 of the loaded files (approximate)")
        elif roles:
            notes.append(f"token lengths of {', '.join(roles)}: the data card (measured)")
    return Lengths(prompt, response, notes)


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


def lm_eval_tokens(config: dict, tasks: list[str], task_rows: int, task_prompt: float, task_new: int) -> float:
    """Tokens one lm_eval job reads and writes: the offline task from the task test set, lm-eval's tasks from
    their sizes (:data:`LM_EVAL_TASKS`; a task not listed there counts 0 and the plan says so)."""
    limit = (config.get("utility_benchmarks") or {}).get("limit")
    total = 0.0
    for t in tasks:
        if t == "tokensafe_task":
            items, per = task_rows, task_prompt + task_new
        elif t in LM_EVAL_TASKS:
            spec = LM_EVAL_TASKS[t]
            items, per = spec["items"], spec["requests"] * spec["tokens"]
        else:
            continue
        if limit:
            items = math.ceil(items * limit) if limit < 1 else min(items, int(limit))
        total += items * per
    return total


def unknown_lm_eval_tasks(config: dict) -> list[str]:
    tasks = (config.get("utility_benchmarks") or {}).get("tasks") or []
    return [t for t in tasks if t != "tokensafe_task" and t not in LM_EVAL_TASKS]


def job_key(rule: str, wildcards) -> str:
    """The benchmark path of a job from its rule and wildcards (a Snakemake Wildcards object or a dict)."""
    names = {k: str(v) for k, v in dict(wildcards.items() if hasattr(wildcards, "items") else wildcards).items()}
    return BENCHMARK[rule].format(**names)


def ratio_tags(values) -> list[str]:
    return [ratio_tag(v) for v in values]


def method_family(method: str) -> str:
    return METHODS[method].family if method in METHODS else "sft"
