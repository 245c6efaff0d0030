# Canonical source tables and the poison-mixed fine-tuning sets.
from tokensafe.data.roles import ROLES


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
