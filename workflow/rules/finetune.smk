# LoRA fine-tuning of the aligned model, one job per (method, poison ratio, seed).


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        directory("results/runs/{method}/p{ratio}/s{seed}/adapter"),
    log:
        "logs/finetune/{method}/p{ratio}_s{seed}.log",
    benchmark:
        "benchmarks/finetune/{method}/p{ratio}_s{seed}.tsv"
    priority: PRIORITY["finetune"]
    threads: threads_for("train")
    resources:
        **resources_for("train"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("finetune.py"),
        aligned=model_ref("aligned"),
        settings=lambda wc: run_settings(wc.method, wc.ratio, wc.seed),
    script:
        "../scripts/finetune.py"
