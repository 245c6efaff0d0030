# Canonical source tables, the poison-mixed fine-tuning sets and the data card.
from argparse import Namespace

from tokensafe.methods.registry import roles_used
from tokensafe.data.roles import ROLES

# Every role some run reads: the card's entries (a run's rows carry the hash of its own roles' entries).
CARD_ROLES = roles_used(METHODS)


def card_tokenizer():
    """What the card counts tokens with: the aligned model's tokenizer (the embedded world's own folder)."""
    return f"{WORLD}/tokenizer" if config["models"]["aligned"] == "embedded" else model_ref("aligned")


def card_tokenizer_input():
    return [f"{WORLD}/tokenizer"] if config["models"]["aligned"] == "embedded" else model_input("aligned")


def source_input(wildcards):
    spec = config["data"][wildcards.source]
    if spec == "embedded":
        return [f"{WORLD}/data/{ROLES[wildcards.source].world_table}.parquet"]
    return [spec["path"]] if "path" in spec else []


rule source_table:
    input:
        source_input,
    output:
        "results/data/{source}.parquet",
    log:
        "logs/source_table/{source}.log",
    benchmark:
        "benchmarks/source_table/{source}.tsv"
    threads: 1
    resources:
        **resources_for("data"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("source_table.py"),
        spec=lambda wc: config["data"][wc.source],
    script:
        "../scripts/source_table.py"


rule mix_finetune_set:
    input:
        task="results/data/task.parquet",
        poison="results/data/poison.parquet",
    output:
        "results/data/finetune/p{ratio}/s{seed}.parquet",
    log:
        "logs/mix_finetune_set/p{ratio}_s{seed}.log",
    benchmark:
        "benchmarks/mix_finetune_set/p{ratio}_s{seed}.tsv"
    threads: 1
    resources:
        **resources_for("data"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("mix_finetune_set.py"),
        n=config["n_finetune"],
        ratio=lambda wc: float(wc.ratio),
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/mix_finetune_set.py"


def card_inputs():
    """Per used role, its canonical table and the files it was read from; the tokenizer the card counts with."""
    inputs = {}
    for role in CARD_ROLES:
        inputs[f"table_{role}"] = f"results/data/{role}.parquet"
        inputs[f"source_{role}"] = source_input(Namespace(source=role))
    inputs["tokenizer"] = card_tokenizer_input()
    inputs["overlap"] = "results/data/overlap.json"
    return inputs


rule data_card:
    input:
        **card_inputs(),
    output:
        json="results/data/card.json",
        md=report("results/data/card.md", caption="../report/card.rst", category="Data"),
    log:
        "logs/data_card.log",
    benchmark:
        "benchmarks/data_card.tsv"
    threads: 1
    resources:
        **resources_for("data"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("data_card.py"),
        roles=CARD_ROLES,
        data={r: config["data"].get(r, "embedded") for r in CARD_ROLES},
        tokenizer=card_tokenizer(),
        template=config["prompt_template"],
        max_length=config["max_length"],
    script:
        "../scripts/data_card.py"


# Train/eval prompt overlap of every table the run reads (planning checked the local ones already), and the
# evaluation prompts data.truncate_long_prompts cuts: tokensafe.data.leakage, tokensafe.data.lengths.
from tokensafe.data.leakage import roles_in_use

OVERLAP_ROLES = roles_in_use(config)
TRUNCATE = config["data"]["truncate_long_prompts"]


def overlap_inputs(wildcards):
    tables = {role: f"results/data/{role}.parquet" for role in OVERLAP_ROLES}
    return {**tables, "aligned": model_input("aligned")} if TRUNCATE else tables


def overlap_settings():
    """What the overlap job reads: the roles' sources and data.allow_overlap; the generation budgets and the
    template only with data.truncate_long_prompts (the record of what it cuts)."""
    data = {role: config["data"][role] for role in OVERLAP_ROLES}
    out = {"data": {**data, "allow_overlap": sorted(config["data"]["allow_overlap"])}}
    if TRUNCATE:
        gen = config["generation"]
        out["data"]["truncate_long_prompts"] = True
        out["prompt_template"] = config["prompt_template"]
        out["generation"] = {
            "backend": gen["backend"],
            "max_new_tokens": gen["max_new_tokens"],
            "task_max_new_tokens": gen.get("task_max_new_tokens", gen["max_new_tokens"]),
            "vllm": {"max_model_len": gen["vllm"].get("max_model_len")} if gen["backend"] == "vllm" else {},
        }
    return out


rule data_overlap:
    input:
        unpack(overlap_inputs),
    output:
        "results/data/overlap.json",
    log:
        "logs/data_overlap.log",
    benchmark:
        "benchmarks/data_overlap.tsv"
    threads: 1
    resources:
        **resources_for("data"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("data_overlap.py"),
        roles=OVERLAP_ROLES,
        settings=overlap_settings(),
        aligned=model_ref("aligned") if TRUNCATE else None,
    script:
        "../scripts/data_overlap.py"
