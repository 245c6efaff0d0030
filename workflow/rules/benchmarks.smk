# Utility benchmarks through lm-evaluation-harness: one lm_eval job per run (and per initial seed), beside
# generate and judge, scoring the aligned model with the run's adapter on utility_benchmarks.tasks.

from tokensafe.plan.run_settings import bench_params, benchmark_backend, task_max_new_tokens

BENCH_TASKS = list((config.get("utility_benchmarks") or {}).get("tasks") or [])
BENCH_BACKEND = benchmark_backend(config)


rule lm_eval:
    input:
        aligned=MODEL_INPUT["aligned"],
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
    priority: PRIORITY["evaluate"]
    group:
        eval_group
    conda:
        VLLM_ENV if BENCH_BACKEND == "vllm" else None
    threads: threads_for(config, "generate")
    resources:
        **resources_for(config, "generate", "lm_eval"),
        **GROUP_STEP,
    params:
        code=code_version("lm_eval.py"),
        aligned=MODEL_REF["aligned"],
        bench=bench_params(config),
        # tokensafe_task answers within the task prompts' generation budget (its only generation setting).
        max_gen_toks=task_max_new_tokens(config["generation"]),
        settings=settings_of_run,
        vllm=vllm_params(config) if BENCH_BACKEND == "vllm" else None,
    script:
        "../scripts/lm_eval.py"
