# Generation on the held-out harmful and task prompts, then the two judges (refusal keywords and the guard),
# and each extra classifier judge selected in judge.classifiers (one job per run and classifier).
from tokensafe.config import classify_model_ref
from tokensafe.eval.safety_judges.classifiers import JUDGES
from tokensafe.plan.run_settings import generation_params, judge_params
from tokensafe.plan.runs import classifier_model

# Extra classifier judges (tokensafe.eval.safety_judges.classifiers; llama_guard is the judge rule's guard), in config order.
CLASSIFIERS = list(config["judge"].get("classifiers", []))


def classifier_model_input(wildcards):
    """The classifier's local folder, tracked as an input (nothing for a hub id)."""
    ref = classifier_model(config, wildcards.classifier)
    return [ref] if classify_model_ref(ref) == "local" else []


def adapter_input(wildcards):
    """A run's adapter ('initial', the aligned model itself, has none)."""
    return [] if wildcards.run.startswith("initial/") else [f"results/runs/{wildcards.run}/adapter"]


rule generate:
    input:
        harmful="results/data/harmful_eval.parquet",
        task="results/data/task_eval.parquet",
        aligned=MODEL_INPUT["aligned"],
        adapter=adapter_input,
    output:
        "results/runs/{run}/generations.parquet",
    log:
        "logs/generate/{run}.log",
    benchmark:
        "benchmarks/generate/{run}.tsv"
    priority: PRIORITY["generate"]
    group:
        eval_group
    conda:
        VLLM_ENV if GEN_BACKEND == "vllm" else None
    threads: threads_for(config, "generate")
    resources:
        **resources_for(config, "generate", "generate"),
        **GROUP_STEP,
    params:
        code=code_version("generate.py"),
        aligned=MODEL_REF["aligned"],
        generation=generation_params(config),
        settings=settings_of_run,
    script:
        "../scripts/generate.py"


rule judge:
    input:
        generations="results/runs/{run}/generations.parquet",
        guard=MODEL_INPUT["guard"],
    output:
        "results/runs/{run}/judgments.parquet",
    log:
        "logs/judge/{run}.log",
    benchmark:
        "benchmarks/judge/{run}.tsv"
    group:
        eval_group
    conda:
        VLLM_ENV if JUDGE_BACKEND == "vllm" else None
    threads: threads_for(config, "judge")
    resources:
        **resources_for(config, "judge", "judge"),
        **GROUP_STEP,
    params:
        code=code_version("judge.py"),
        guard=MODEL_REF["guard"],
        guard_ref=config["models"]["guard"],
        judge=judge_params(config),
        dtype=config["models"].get("dtype", "auto"),
        backend=JUDGE_BACKEND,
        vllm=vllm_params(config) if JUDGE_BACKEND == "vllm" else None,
        cpu_numerics=CPU_NUMERICS,
    script:
        "../scripts/judge.py"


rule judge_classifier:
    input:
        generations="results/runs/{run}/generations.parquet",
        model=classifier_model_input,
    output:
        "results/runs/{run}/classifiers/{classifier}.parquet",
    log:
        "logs/judge_classifier/{run}/{classifier}.log",
    benchmark:
        "benchmarks/judge_classifier/{run}/{classifier}.tsv"
    wildcard_constraints:
        classifier="|".join(n for n in JUDGES if n != "llama_guard"),
    group:
        eval_group
    threads: threads_for(config, "judge")
    resources:
        **resources_for(config, "judge", "judge_classifier"),
        **GROUP_STEP,
    params:
        code=code_version("judge_classifier.py"),
        model=lambda w: classifier_model(config, w.classifier),
        batch_size=config["judge"].get("classifier_batch_size", 8),
        dtype=config["models"].get("dtype", "auto"),
        cpu_numerics=CPU_NUMERICS,
    script:
        "../scripts/judge_classifier.py"
