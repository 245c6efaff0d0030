# TOSS / TOSS-Pro: reference models, per-token loss dumps, masks and refinement rounds (docs/methods.md §1).
# Paths: results/toss/reference/{utility,harmful}/adapter (shared by every run), then per fine-tuning
# set results/toss/p{ratio}/s{seed}/: losses_utility.parquet and, per round t, round{t}/losses_harmful
# (toss_losses), round{t}/mask (+ .json; toss_mask); TOSS-Pro rounds t >= 1 retrain the harmful model on D^h
# plus round{t}/picks.
TOSS_DIR = "results/toss"

from tokensafe.rerun import stage_keys


def toss_settings():
    t = config["toss"]
    return {
        "d": t["d"],
        "selection": t["selection"],
        "lora": t["lora"],
        "recipe": t["recipe"],
        "chunk_size": t.get("chunk_size", 1024),
    }


def toss_pro_settings():
    return {**toss_settings(), "rounds": config["toss"]["pro"]["rounds"], "k": config["toss"]["pro"]["k"]}


def toss_reference_settings(seed=0):
    """What defines a TOSS reference model: LoRA and recipe (not d, the selection or the round count)."""
    return {**stage_settings(stage_keys.pick(config["toss"], stage_keys.TOSS_REFERENCE)), "seed": seed}


def toss_losses_settings():
    """What a loss dump reads besides its inputs (the adapter that scores): the cross-entropy chunk size.
    It stays a rerun trigger: chunks of another size are other matrix shapes, which can round differently."""
    return stage_settings(stage_keys.pick(config["toss"], stage_keys.TOSS_LOSSES))


def harmful_adapter(wildcards):
    t = int(wildcards.round)
    if t == 0:
        return f"{TOSS_DIR}/reference/harmful/adapter"
    return f"{TOSS_DIR}/p{wildcards.ratio}/s{wildcards.seed}/round{t}/harmful_adapter"


def previous_picks(wildcards):
    t = int(wildcards.round)
    return [] if t <= 1 else [f"{TOSS_DIR}/p{wildcards.ratio}/s{wildcards.seed}/round{t - 1}/picks.parquet"]


FINETUNE_INPUTS["toss"] = lambda wc: {"mask": f"{TOSS_DIR}/p{wc.ratio}/s{wc.seed}/round0/mask.parquet"}
FINETUNE_INPUTS["toss_pro"] = lambda wc: {
    "mask": f"{TOSS_DIR}/p{wc.ratio}/s{wc.seed}/round{config['toss']['pro']['rounds']}/mask.parquet"
}
METHOD_SETTINGS["toss"] = toss_settings
METHOD_SETTINGS["toss_pro"] = toss_pro_settings


def toss_report_inputs():
    """Mask summaries the report lists (precision/recall against the known poison tokens)."""
    wanted = set()
    if "toss" in METHODS:
        wanted |= {(r, s, 0) for r in method_ratios("toss") for s in method_seeds("toss")}
    if "toss_pro" in METHODS:
        wanted |= {
            (r, s, t)
            for r in method_ratios("toss_pro")
            for s in method_seeds("toss_pro")
            for t in range(config["toss"]["pro"]["rounds"] + 1)
        }
    return [
        f"{TOSS_DIR}/p{r}/s{s}/round{t}/mask.json"
        for r, s, t in sorted(wanted, key=lambda x: (float(x[0]), x[1], x[2]))
    ]


rule toss_reference:
    input:
        data=lambda wc: f"results/data/{wc.kind}_ref.parquet",
        aligned=model_input("aligned"),
    output:
        directory(f"{TOSS_DIR}/reference/{{kind}}/adapter"),
    log:
        "logs/toss_reference/{kind}.log",
    benchmark:
        "benchmarks/toss_reference/{kind}.tsv"
    wildcard_constraints:
        kind="harmful|utility",
    priority: PRIORITY["prep"]
    threads: threads_for("train")
    resources:
        **resources_for("train"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("toss_reference.py"),
        aligned=model_ref("aligned"),
        settings=toss_reference_settings(),
    script:
        "../scripts/toss_reference.py"


rule toss_utility_losses:
    input:
        data="results/data/finetune/p{ratio}/s{seed}.parquet",
        adapter=f"{TOSS_DIR}/reference/utility/adapter",
        aligned=model_input("aligned"),
    output:
        f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/losses_utility.parquet",
    log:
        "logs/toss_utility_losses/p{ratio}_s{seed}.log",
    benchmark:
        "benchmarks/toss_utility_losses/p{ratio}_s{seed}.tsv"
    priority: PRIORITY["prep"]
    threads: threads_for("generate")
    resources:
        **resources_for("generate"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("toss_losses.py"),
        aligned=model_ref("aligned"),
        settings=toss_losses_settings(),
    script:
        "../scripts/toss_losses.py"


rule toss_losses:
    input:
        data="results/data/finetune/p{ratio}/s{seed}.parquet",
        adapter=harmful_adapter,
        aligned=model_input("aligned"),
    output:
        f"{TOSS_DIR}/p{{ratio}}/s{{seed}}/round{{round}}/losses_harmful.parquet",
    log:
        "logs/toss_losses/p{ratio}_s{seed}_r{round}.log",
    benchmark:
        "benchmarks/toss_losses/p{ratio}_s{seed}_r{round}.tsv"
    wildcard_constraints:
        round=r"\d+",
    priority: PRIORITY["prep"]
    threads: threads_for("generate")
    resources:
        **resources_for("generate"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("toss_losses.py"),
        aligned=model_ref("aligned"),
        settings=toss_losses_settings(),
    script:
        "../scripts/toss_losses.py"


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
        **resources_for("data"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
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
        aligned=model_input("aligned"),
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
    threads: threads_for("train")
    resources:
        **resources_for("train"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("toss_pro_retrain.py"),
        aligned=model_ref("aligned"),
        settings=toss_reference_settings(),
        k=config["toss"]["pro"]["k"],
    script:
        "../scripts/toss_pro_retrain.py"
