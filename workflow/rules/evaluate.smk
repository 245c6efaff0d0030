# Generation on the held-out harmful and task prompts, then the two judges.


def adapter_input(wildcards):
    method, _, _ = parse_run(wildcards.run)
    return [] if method == "initial" else [f"results/runs/{wildcards.run}/adapter"]


rule generate:
    input:
        harmful="results/data/harmful_eval.parquet",
        task="results/data/task_eval.parquet",
        aligned=model_input("aligned"),
        adapter=adapter_input,
    output:
        "results/runs/{run}/generations.parquet",
    log:
        "logs/generate/{run}.log",
    benchmark:
        "benchmarks/generate/{run}.tsv"
    priority: PRIORITY["generate"]
    conda:
        VLLM_ENV if GEN_BACKEND == "vllm" else None
    threads: threads_for("generate")
    resources:
        **resources_for("generate"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("generate.py"),
        aligned=model_ref("aligned"),
        generation=generation_params(),
        settings=generation_settings,
    script:
        "../scripts/generate.py"


rule judge:
    input:
        generations="results/runs/{run}/generations.parquet",
        guard=model_input("guard"),
    output:
        "results/runs/{run}/judgments.parquet",
    log:
        "logs/judge/{run}.log",
    benchmark:
        "benchmarks/judge/{run}.tsv"
    conda:
        VLLM_ENV if JUDGE_BACKEND == "vllm" else None
    threads: threads_for("judge")
    resources:
        **resources_for("judge"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("judge.py"),
        guard=model_ref("guard"),
        guard_ref=config["models"]["guard"],
        judge=judge_params(),
        dtype=config["models"].get("dtype", "auto"),
        backend=JUDGE_BACKEND,
        vllm=vllm_params() if JUDGE_BACKEND == "vllm" else None,
        cpu_numerics=CPU_NUMERICS,
    script:
        "../scripts/judge.py"
