# Canonical source tables, the poison-mixed fine-tuning sets and the data card.
from tokensafe.methods.registry import roles_used
from tokensafe.plan.run_settings import overlap_settings
from tokensafe.plan.runs import card_inputs, card_tokenizer, source_input

# Every role some run reads: the card's entries (a run's rows carry the hash of its own roles' entries), and the
# tables whose train/eval prompt overlap the data_overlap job checks (planning checked the local ones already;
# tokensafe.data.leakage) and whose evaluation prompts data.truncate_long_prompts cuts (tokensafe.data.lengths).
DATA_ROLES = roles_used(METHODS)
TRUNCATE = config["data"]["truncate_long_prompts"]


rule source_table:
    input:
        lambda wc: source_input(config, wc.source),
    output:
        "results/data/{source}.parquet",
    log:
        "logs/source_table/{source}.log",
    benchmark:
        "benchmarks/source_table/{source}.tsv"
    threads: 1
    resources:
        **resources_for(config, "data", "source_table"),
    params:
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
        **resources_for(config, "data", "mix_finetune_set"),
    params:
        code=code_version("mix_finetune_set.py"),
        n=config["n_finetune"],
        ratio=lambda wc: float(wc.ratio),
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/mix_finetune_set.py"


rule data_card:
    input:
        **card_inputs(config, DATA_ROLES),
    output:
        json="results/data/card.json",
        md=report("results/data/card.md", caption="../report/card.rst", category="Data"),
    log:
        "logs/data_card.log",
    benchmark:
        "benchmarks/data_card.tsv"
    threads: 1
    resources:
        **resources_for(config, "data", "data_card"),
    params:
        code=code_version("data_card.py"),
        roles=DATA_ROLES,
        data={r: config["data"].get(r, "embedded") for r in DATA_ROLES},
        tokenizer=card_tokenizer(config),
        template=config["prompt_template"],
        max_length=config["max_length"],
    script:
        "../scripts/data_card.py"


def overlap_inputs(wildcards):
    tables = {role: f"results/data/{role}.parquet" for role in DATA_ROLES}
    return {**tables, "aligned": MODEL_INPUT["aligned"]} if TRUNCATE else tables


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
        **resources_for(config, "data", "data_overlap"),
    params:
        code=code_version("data_overlap.py"),
        roles=DATA_ROLES,
        settings=overlap_settings(config, DATA_ROLES),
        aligned=MODEL_REF["aligned"] if TRUNCATE else None,
    script:
        "../scripts/data_overlap.py"
