# Baselines: the reference inputs they share (aligned-model token losses, alignment-subspace projectors).
BASELINE_DIR = "results/baselines"
METHOD_SETTINGS["constrained_sft"] = lambda: dict(config["baselines"]["constrained_sft"])
METHOD_SETTINGS["random_mask"] = lambda: dict(config["baselines"]["random_mask"])
METHOD_SETTINGS["prefix_mask"] = lambda: dict(config["baselines"]["prefix_mask"])
METHOD_SETTINGS["safety_mix"] = lambda: dict(config["baselines"]["safety_mix"])
METHOD_SETTINGS["safelora"] = lambda: dict(config["baselines"]["safelora"])
METHOD_SETTINGS["asft"] = lambda: dict(config["baselines"]["asft"])
FINETUNE_INPUTS["constrained_sft"] = lambda wc: {
    "reference_losses": f"{BASELINE_DIR}/p{wc.ratio}/s{wc.seed}/aligned_losses.parquet"
}
FINETUNE_INPUTS["safety_mix"] = lambda wc: {"safety_demos": "results/data/safety_demos.parquet"}
FINETUNE_INPUTS["safelora"] = lambda wc: {"projectors": f"{BASELINE_DIR}/projectors.pt"}
FINETUNE_INPUTS["asft"] = lambda wc: {"projectors": f"{BASELINE_DIR}/projectors.pt"}


def aligned_loss_settings():
    return stage_settings({"chunk_size": config["toss"].get("chunk_size", 1024)})


rule aligned_losses:
    input:
        data="results/data/finetune/p{ratio}/s{seed}.parquet",
        aligned=model_input("aligned"),
    output:
        f"{BASELINE_DIR}/p{{ratio}}/s{{seed}}/aligned_losses.parquet",
    log:
        "logs/aligned_losses/p{ratio}_s{seed}.log",
    benchmark:
        "benchmarks/aligned_losses/p{ratio}_s{seed}.tsv"
    priority: PRIORITY["prep"]
    threads: threads_for("generate")
    resources:
        **resources_for("generate"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("aligned_losses.py"),
        aligned=model_ref("aligned"),
        settings=aligned_loss_settings(),
    script:
        "../scripts/aligned_losses.py"


rule subspace_projectors:
    input:
        aligned=model_input("aligned"),
        base=model_input("base"),
    output:
        f"{BASELINE_DIR}/projectors.pt",
    log:
        "logs/subspace_projectors.log",
    benchmark:
        "benchmarks/subspace_projectors.tsv"
    priority: PRIORITY["prep"]
    threads: threads_for("generate")
    resources:
        **resources_for("generate"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("subspace_projectors.py"),
        aligned=model_ref("aligned"),
        base=model_ref("base"),
        target_modules=config["finetune"]["lora"]["target_modules"],
        dtype=config["models"].get("dtype", "auto"),
        cpu_numerics=CPU_NUMERICS,
    script:
        "../scripts/subspace_projectors.py"
