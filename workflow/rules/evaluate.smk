# Generation on the held-out harmful and task prompts, then the two judges (refusal keywords and the guard),
# and each extra classifier judge selected in judge.classifiers (one job per run and classifier).
from tokensafe.eval.safety_judges.classifiers import JUDGES

# Extra classifier judges (tokensafe.eval.safety_judges.classifiers; llama_guard is the judge rule's guard), in config order.
CLASSIFIERS = list(config["judge"].get("classifiers", []))


def classifier_model(name):
    """The classifier's model reference: judge.classifier_models.<name>, else the registry's hub id."""
    return config["judge"].get("classifier_models", {}).get(name) or JUDGES[name].model


def classifier_model_input(wildcards):
    """The classifier's local folder, tracked as an input (nothing for a hub id)."""
    ref = classifier_model(wildcards.classifier)
    return [ref] if classify_model_ref(ref) == "local" else []


def classifier_outputs(run):
    return [f"results/runs/{run}/classifiers/{name}.parquet" for name in CLASSIFIERS]


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
    threads: threads_for("judge")
    resources:
        **resources_for("judge"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("judge_classifier.py"),
        model=lambda w: classifier_model(w.classifier),
        batch_size=config["judge"].get("classifier_batch_size", 8),
        dtype=config["models"].get("dtype", "auto"),
        cpu_numerics=CPU_NUMERICS,
    script:
        "../scripts/judge_classifier.py"
