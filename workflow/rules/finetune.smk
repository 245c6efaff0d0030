# LoRA fine-tuning of the aligned model, one job per (method, poison ratio, seed). What defines a method's run
# (its settings) and the extra files it reads (a mask, reference signals) come from its registry entry
# (tokensafe.methods.registry): a new method needs nothing here.
from tokensafe.plan.runs import finetune_inputs


rule finetune:
    input:
        unpack(lambda wc: finetune_inputs(config, wc.method, wc.ratio, wc.seed)),
    output:
        directory("results/runs/{method}/p{ratio}/s{seed}/adapter"),
    log:
        "logs/finetune/{method}/p{ratio}_s{seed}.log",
    benchmark:
        "benchmarks/finetune/{method}/p{ratio}_s{seed}.tsv"
    priority: PRIORITY["finetune"]
    threads: threads_for(config, "train")
    resources:
        **resources_for(config, "train", "finetune"),
    params:
        code=code_version("finetune.py"),
        aligned=MODEL_REF["aligned"],
        settings=lambda wc: run_settings(config, wc.method, wc.ratio, wc.seed),
    script:
        "../scripts/finetune.py"
