"""The runs a config asks for and the files they read: (method, poison ratio, seed) cells, model references, the
fine-tune's inputs (the method's extra files from its registry entry) and the summaries the report lists.

Torch-free: the Snakefile calls these when it plans.
"""

from __future__ import annotations

from tokensafe.config import classify_model_ref, ratio_tag
from tokensafe.data.roles import ROLES
from tokensafe.methods.pact.ladder import LADDER
from tokensafe.methods.registry import PACT_DIR, TOSS_DIR, finetune_extra_inputs

WORLD = "results/world"  # the embedded world's data, tokenizer and models


def seeds(config: dict) -> list[int]:
    return [int(s) for s in config["seeds"]]


def method_ratios(config: dict, method: str) -> list[str]:
    """Poison ratios (as path tags) a method runs at: its entry in method_poison_ratios, else poison_ratios."""
    return [ratio_tag(p) for p in config.get("method_poison_ratios", {}).get(method, config["poison_ratios"])]


def method_seeds(config: dict, method: str) -> list[int]:
    """Seeds a method runs at: its entry in method_seeds, else seeds ('initial' runs at every seed)."""
    return [int(s) for s in config.get("method_seeds", {}).get(method, seeds(config))]


def ratios(config: dict) -> list[str]:
    """Every ratio some method uses (the fine-tuning sets to build), in increasing order."""
    used = {r for m in config["methods"] for r in method_ratios(config, m)} | {
        ratio_tag(p) for p in config["poison_ratios"]
    }
    return sorted(used, key=float)


def all_runs(config: dict) -> list[dict]:
    """Every evaluated run: 'initial' once per ratio and seed, then each method at its ratios and seeds."""
    runs = [
        dict(method="initial", poison_ratio=float(r), seed=s, run=f"initial/s{s}")
        for r in ratios(config)
        for s in seeds(config)
    ]
    runs += [
        dict(method=m, poison_ratio=float(r), seed=s, run=f"{m}/p{r}/s{s}")
        for m in config["methods"]
        for r in method_ratios(config, m)
        for s in method_seeds(config, m)
    ]
    return runs


def model_ref(config: dict, role: str) -> str:
    """The path or hub id the stages load for a model role (a 'hub:' marker stays: tokensafe.modelref.load_name
    strips it where the model is loaded)."""
    ref = config["models"][role]
    return f"{WORLD}/{role}" if ref == "embedded" else ref


def model_input(config: dict, role: str) -> list[str]:
    """Files Snakemake must track for a model: the embedded folder or an existing local path."""
    ref = config["models"][role]
    return {"embedded": [f"{WORLD}/{role}"], "local": [ref], "hub": []}[classify_model_ref(ref)]


def finetune_inputs(config: dict, method: str, ratio: str, seed: str) -> dict:
    """A fine-tune's inputs: its fine-tuning set, the aligned model, and the method's extra files (registry)."""
    data = {"data": f"results/data/finetune/p{ratio}/s{seed}.parquet", "aligned": model_input(config, "aligned")}
    return {**data, **finetune_extra_inputs(config, method, ratio, seed)}


def source_input(config: dict, role: str) -> list[str]:
    """The file a data role's table is read from: the embedded world's table, a local path, or none (hub)."""
    spec = config["data"][role]
    if spec == "embedded":
        return [f"{WORLD}/data/{ROLES[role].world_table}.parquet"]
    return [spec["path"]] if "path" in spec else []


def card_tokenizer(config: dict) -> str:
    """What the data card counts tokens with: the aligned model's tokenizer (the embedded world's own folder)."""
    return f"{WORLD}/tokenizer" if config["models"]["aligned"] == "embedded" else model_ref(config, "aligned")


def card_inputs(config: dict, roles: list[str]) -> dict:
    """Per used role, its canonical table and the files it was read from; the tokenizer the card counts with."""
    inputs = {}
    for role in roles:
        inputs[f"table_{role}"] = f"results/data/{role}.parquet"
        inputs[f"source_{role}"] = source_input(config, role)
    embedded = config["models"]["aligned"] == "embedded"
    inputs["tokenizer"] = [f"{WORLD}/tokenizer"] if embedded else model_input(config, "aligned")
    inputs["overlap"] = "results/data/overlap.json"
    return inputs


def toss_report_inputs(config: dict) -> list[str]:
    """Mask summaries the report lists (precision/recall against the known poison tokens)."""
    methods = config["methods"]
    wanted = set()
    if "toss" in methods:
        wanted |= {(r, s, 0) for r in method_ratios(config, "toss") for s in method_seeds(config, "toss")}
    if "toss_pro" in methods:
        wanted |= {
            (r, s, t)
            for r in method_ratios(config, "toss_pro")
            for s in method_seeds(config, "toss_pro")
            for t in range(config["toss"]["pro"]["rounds"] + 1)
        }
    return [
        f"{TOSS_DIR}/p{r}/s{s}/round{t}/mask.json"
        for r, s, t in sorted(wanted, key=lambda x: (float(x[0]), x[1], x[2]))
    ]


def pact_report_inputs(config: dict) -> list[str]:
    """The safety tokens, when a PACT rung that uses them runs."""
    return (
        [f"{PACT_DIR}/safety_tokens.parquet"]
        if any(LADDER[m]["tokens"] for m in LADDER if m in config["methods"])
        else []
    )


def pact_conflict_inputs(config: dict) -> list[str]:
    """Weight-conflict summaries of the fine-tuning sets that a weighted PACT method trains on."""
    weighted = [m for m in LADDER if LADDER[m]["weights"] and m in config["methods"]]
    sets = sorted(
        {(r, s) for m in weighted for r in method_ratios(config, m) for s in method_seeds(config, m)},
        key=lambda x: (float(x[0]), x[1]),
    )
    return [f"{PACT_DIR}/p{r}/s{s}/weight_conflicts.json" for r, s in sets]


def classifier_model(config: dict, name: str) -> str:
    """An extra classifier judge's model reference: judge.classifier_models.<name>, else the registry's hub id."""
    from tokensafe.eval.safety_judges.classifiers import JUDGES

    return config["judge"].get("classifier_models", {}).get(name) or JUDGES[name].model


def classifier_outputs(config: dict, run: str) -> list[str]:
    return [f"results/runs/{run}/classifiers/{name}.parquet" for name in config["judge"].get("classifiers", [])]


def lm_eval_outputs(config: dict) -> list[str]:
    """The lm_eval tables the summary reads: one per run, none when no task is configured."""
    tasks = (config.get("utility_benchmarks") or {}).get("tasks") or []
    return [f"results/runs/{r['run']}/lm_eval.parquet" for r in all_runs(config)] if tasks else []
