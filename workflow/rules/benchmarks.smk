# Utility benchmarks through lm-evaluation-harness: one lm_eval job per run (and per initial seed), beside
# generate and judge, scoring the aligned model with the run's adapter on utility_benchmarks.tasks.

BENCH = config.get("utility_benchmarks") or {}
BENCH_TASKS = list(BENCH.get("tasks") or [])
BENCH_BACKEND = BENCH.get("backend", "hf")


def lm_eval_outputs():
    """The lm_eval tables the summary reads: one per run, none when no task is configured."""
    return [f"results/runs/{r['run']}/lm_eval.parquet" for r in all_runs()] if BENCH_TASKS else []


def bench_params():
    """What the stage reads from utility_benchmarks: the vLLM engine settings only with that backend."""
    return {k: v for k, v in BENCH.items() if k != "vllm"}


rule lm_eval:
    input:
        aligned=model_input("aligned"),
        adapter=adapter_input,
        # tokensafe_task scores the run's own task test set; lm-eval's tasks bring their data.
        task_data="results/data/task_eval.parquet" if "tokensafe_task" in BENCH_TASKS else [],
    output:
        tidy="results/runs/{run}/lm_eval.parquet",
        json="results/runs/{run}/lm_eval.json",
    log:
        "logs/lm_eval/{run}.log",
    benchmark:
        "benchmarks/lm_eval/{run}.tsv"
    priority: PRIORITY["generate"]
    conda:
        VLLM_ENV if BENCH_BACKEND == "vllm" else None
    threads: threads_for("generate")
    resources:
        **resources_for("generate"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("lm_eval.py"),
        aligned=model_ref("aligned"),
        bench=bench_params(),
        # tokensafe_task answers within the task prompts' generation budget (its only generation setting).
        max_gen_toks=config["generation"].get("task_max_new_tokens", config["generation"]["max_new_tokens"]),
        settings=generation_settings,
        vllm=vllm_params() if BENCH_BACKEND == "vllm" else None,
    script:
        "../scripts/lm_eval.py"
