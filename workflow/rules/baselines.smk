# Baselines: the reference inputs they share (aligned-model token losses, alignment-subspace projectors).
# Each baseline's settings (baselines.<name>) and fine-tune inputs are declared in tokensafe.methods.registry.
from tokensafe.methods.registry import BASELINE_DIR
from tokensafe.plan.run_settings import aligned_loss_settings


rule aligned_losses:
    input:
        data="results/data/finetune/p{ratio}/s{seed}.parquet",
        aligned=MODEL_INPUT["aligned"],
    output:
        f"{BASELINE_DIR}/p{{ratio}}/s{{seed}}/aligned_losses.parquet",
    log:
        "logs/aligned_losses/p{ratio}_s{seed}.log",
    benchmark:
        "benchmarks/aligned_losses/p{ratio}_s{seed}.tsv"
    priority: PRIORITY["prep"]
    threads: threads_for(config, "generate")
    resources:
        **resources_for(config, "generate", "aligned_losses"),
    params:
        code=code_version("aligned_losses.py"),
        aligned=MODEL_REF["aligned"],
        settings=aligned_loss_settings(config),
    script:
        "../scripts/aligned_losses.py"


rule subspace_projectors:
    input:
        aligned=MODEL_INPUT["aligned"],
        base=MODEL_INPUT["base"],
    output:
        f"{BASELINE_DIR}/projectors.pt",
    log:
        "logs/subspace_projectors.log",
    benchmark:
        "benchmarks/subspace_projectors.tsv"
    priority: PRIORITY["prep"]
    threads: threads_for(config, "generate")
    resources:
        **resources_for(config, "generate", "subspace_projectors"),
    params:
        code=code_version("subspace_projectors.py"),
        aligned=MODEL_REF["aligned"],
        base=MODEL_REF["base"],
        target_modules=config["finetune"]["lora"]["target_modules"],
        dtype=config["models"].get("dtype", "auto"),
        cpu_numerics=CPU_NUMERICS,
    script:
        "../scripts/subspace_projectors.py"
