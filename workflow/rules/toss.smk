# TOSS / TOSS-Pro: reference models, per-token loss dumps, masks and refinement rounds (docs/methods.md §1).
# Paths: results/toss/reference/{utility,harmful}/adapter (shared by every run), then per fine-tuning
# set results/toss/p{ratio}/s{seed}/: losses_utility.parquet and, per round t, round{t}/losses_harmful
# (toss_losses), round{t}/mask (+ .json; toss_mask); TOSS-Pro rounds t >= 1 retrain the harmful model on D^h
# plus round{t}/picks.
from tokensafe.methods.registry import TOSS_DIR
from tokensafe.plan.run_settings import toss_losses_settings, toss_reference_settings


def harmful_adapter(wildcards):
    """The harmful model that scores round t: the reference at round 0, else round t's retrain (TOSS-Pro)."""
    t = int(wildcards.round)
    if t == 0:
        return f"{TOSS_DIR}/reference/harmful/adapter"
    return f"{TOSS_DIR}/p{wildcards.ratio}/s{wildcards.seed}/round{t}/harmful_adapter"


def previous_picks(wildcards):
    t = int(wildcards.round)
    return [] if t <= 1 else [f"{TOSS_DIR}/p{wildcards.ratio}/s{wildcards.seed}/round{t - 1}/picks.parquet"]


rule toss_reference:
    input:
        data=lambda wc: f"results/data/{wc.kind}_ref.parquet",
        aligned=MODEL_INPUT["aligned"],
    output:
        directory(f"{TOSS_DIR}/reference/{{kind}}/adapter"),
    log:
        "logs/toss_reference/{kind}.log",
    benchmark:
        "benchmarks/toss_reference/{kind}.tsv"
    wildcard_constraints:
        kind="harmful|utility",
    priority: PRIORITY["prep"]
    threads: threads_for(config, "train")
    resources:
        **resources_for(config, "train", "toss_reference"),
    params:
        code=code_version("toss_reference.py"),
        aligned=MODEL_REF["aligned"],
        settings=toss_reference_settings(config),
    script:
        "../scripts/toss_reference.py"


rule toss_losses:
    input:
        data="results/data/finetune/p{ratio}/s{seed}.parquet",
        adapter=harmful_adapter,
        aligned=MODEL_INPUT["aligned"],
    output:
        f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/round{{round}}/losses_harmful.parquet",
    log:
        "logs/toss_losses/p{ratio}_s{seed}_r{round}.log",
    benchmark:
        "benchmarks/toss_losses/p{ratio}_s{seed}_r{round}.tsv"
    wildcard_constraints:
        round=r"\d+",
    priority: PRIORITY["prep"]
    threads: threads_for(config, "generate")
    resources:
        **resources_for(config, "generate", "toss_losses"),
    params:
        code=code_version("toss_losses.py"),
        aligned=MODEL_REF["aligned"],
        settings=toss_losses_settings(config),
    script:
        "../scripts/toss_losses.py"


# The utility model's loss dump: the same stage as the harmful one's, scored once per fine-tuning set.
use rule toss_losses as toss_utility_losses with:
    input:
        data="results/data/finetune/p{ratio}/s{seed}.parquet",
        adapter=f"{TOSS_DIR}/reference/utility/adapter",
        aligned=MODEL_INPUT["aligned"],
    output:
        f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/losses_utility.parquet",
    log:
        "logs/toss_utility_losses/p{ratio}_s{seed}.log",
    benchmark:
        "benchmarks/toss_utility_losses/p{ratio}_s{seed}.tsv"
    resources:
        **resources_for(config, "generate", "toss_utility_losses"),


# The mask is its own job, so that d or the selection recomputes masks only: the loss dumps (and the
# TOSS-Pro retrains that read them) stay.
rule toss_mask:
    input:
        utility=f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/losses_utility.parquet",
        harmful=f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/round{{round}}/losses_harmful.parquet",
    output:
        mask=f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/round{{round}}/mask.parquet",
        summary=report(
            f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/round{{round}}/mask.json",
            caption="../report/toss_mask.rst",
            category="Fine-tuning",
            subcategory="TOSS masks",
            labels={"poison ratio": "{ratio}", "seed": "{seed}", "round": "{round}"},
        ),
    log:
        "logs/toss_mask/p{ratio}_s{seed}_r{round}.log",
    benchmark:
        "benchmarks/toss_mask/p{ratio}_s{seed}_r{round}.tsv"
    wildcard_constraints:
        round=r"\d+",
    priority: PRIORITY["prep"]
    threads: 1
    resources:
        **resources_for(config, "data", "toss_mask"),
    params:
        code=code_version("toss_mask.py"),
        d=config["toss"]["d"],
        selection=config["toss"]["selection"],
    script:
        "../scripts/toss_mask.py"


rule toss_pro_retrain:
    input:
        data="results/data/finetune/p{ratio}/s{seed}.parquet",
        harmful_ref="results/data/harmful_ref.parquet",
        utility=f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/losses_utility.parquet",
        scored=lambda wc: f"{TOSS_DIR}/p{wc.ratio}/s{wc.seed}/round{int(wc.round) - 1}/losses_harmful.parquet",
        previous=previous_picks,
        aligned=MODEL_INPUT["aligned"],
    output:
        picks=f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/round{{round}}/picks.parquet",
        adapter=directory(f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/round{{round}}/harmful_adapter"),
    log:
        "logs/toss_pro_retrain/p{ratio}_s{seed}_r{round}.log",
    benchmark:
        "benchmarks/toss_pro_retrain/p{ratio}_s{seed}_r{round}.tsv"
    wildcard_constraints:
        round=r"[1-9]\d*",
    priority: PRIORITY["prep"]
    threads: threads_for(config, "train")
    resources:
        **resources_for(config, "train", "toss_pro_retrain"),
    params:
        code=code_version("toss_pro_retrain.py"),
        aligned=MODEL_REF["aligned"],
        settings=toss_reference_settings(config),
        k=config["toss"]["pro"]["k"],
    script:
        "../scripts/toss_pro_retrain.py"
