# The LLM judge (judge.llm; tokensafe.stages.llm_judge_jobs): per run, its win rate against the reference run's
# response to the same prompt (the reference run itself gets none: 50 by definition; 'initial' gets one per
# poison ratio, against the reference at that ratio and seed) and its rubric scores on the harmful prompts.
# Every judge.llm key is a param of these jobs only (a rerun asks the judge only what its cache lacks).
LLM = config["judge"]["llm"]
LLM_ON = bool(LLM.get("enabled"))
LLM_WIN = LLM_ON and LLM.get("pairwise_template") is not None
LLM_RUBRICS = LLM_ON and bool(LLM.get("rubrics"))
LLM_REF = LLM.get("reference", "sft")
LLM_LOCAL = LLM_ON and LLM.get("server") in ("transformers", "vllm")
LLM_CACHE = "results/llm_judge_cache"


def _llm_config_problem():
    if LLM["server"] == "external" and not (LLM.get("base_url") and LLM.get("model")):
        return "judge.llm.server external needs judge.llm.base_url and judge.llm.model"
    if not LLM_WIN:
        return None
    if LLM_REF not in METHODS:
        return f"judge.llm.reference {LLM_REF} is not in methods {METHODS}: every win rate is against its runs"
    have = {(r, s) for r in method_ratios(LLM_REF) for s in method_seeds(LLM_REF)}
    need = {(ratio_tag(r["poison_ratio"]), r["seed"]) for r in all_runs() if r["method"] != LLM_REF}
    missing = sorted(need - have)
    if missing:
        cells = ", ".join(f"P={r} seed {s}" for r, s in missing)
        return (
            f"judge.llm.reference {LLM_REF} does not run at {cells}, where another method does: add them to its "
            "method_poison_ratios / method_seeds, or choose another reference"
        )
    return None


if LLM_ON:
    _problem = _llm_config_problem()
    if _problem:
        raise WorkflowError(f"config: {_problem}")
    if LLM["server"] == "vllm":
        from tokensafe.eval.vllm_backend import ENV_PYTHON, VLLM_MISSING, vllm_env_problem

        _python = os.path.abspath(os.path.join(workflow.basedir, config["generation"]["vllm"]["python"]))
        _problem = vllm_env_problem(_python, config["generation"]["vllm"]["python"])
        if _problem:
            raise WorkflowError(f"judge.llm.server = vllm: {_problem}. {VLLM_MISSING}")
        os.environ.setdefault(ENV_PYTHON, _python)  # not a param: which interpreter serves reruns nothing

LLM_JUDGE_MODEL = (f"{WORLD}/judge" if LLM["model_path"] == "embedded" else LLM["model_path"]) if LLM_LOCAL else None
LLM_JUDGE_INPUT = (
    {"embedded": [f"{WORLD}/judge"], "local": [LLM["model_path"]], "hub": []}[classify_model_ref(LLM["model_path"])]
    if LLM_LOCAL
    else []
)


def llm_paths(run):
    """The LLM-judge outputs of one run (a dict of all_runs()): {'llm_win_rate': path | None, 'llm_rubrics': ...}."""
    win = LLM_WIN and run["method"] != LLM_REF
    return {
        "llm_win_rate": (
            f"results/runs/{run['run']}/llm_win_rate/p{ratio_tag(run['poison_ratio'])}.parquet" if win else None
        ),
        "llm_rubrics": f"results/runs/{run['run']}/llm_rubrics.parquet" if LLM_RUBRICS else None,
    }


def llm_outputs(kind):
    return sorted({p for r in all_runs() if (p := llm_paths(r)[kind])})


def llm_reference_input(wildcards):
    _, _, seed = parse_run(wildcards.run)
    return f"results/runs/{LLM_REF}/p{wildcards.ratio}/s{seed}/generations.parquet"


rule llm_win_rate:
    input:
        generations="results/runs/{run}/generations.parquet",
        reference=llm_reference_input,
        judge=LLM_JUDGE_INPUT,
    output:
        "results/runs/{run}/llm_win_rate/p{ratio}.parquet",
    log:
        "logs/llm_win_rate/{run}/p{ratio}.log",
    benchmark:
        "benchmarks/llm_win_rate/{run}/p{ratio}.tsv"
    priority: PRIORITY["generate"]
    threads: 1
    resources:
        **resources_for("judge"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("llm_win_rate.py"),
        llm=LLM,
        judge_model=LLM_JUDGE_MODEL,
        cache=LLM_CACHE,
    script:
        "../scripts/llm_win_rate.py"


rule llm_rubrics:
    input:
        generations="results/runs/{run}/generations.parquet",
        judge=LLM_JUDGE_INPUT,
    output:
        "results/runs/{run}/llm_rubrics.parquet",
    log:
        "logs/llm_rubrics/{run}.log",
    benchmark:
        "benchmarks/llm_rubrics/{run}.tsv"
    priority: PRIORITY["generate"]
    threads: 1
    resources:
        **resources_for("judge"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("llm_rubrics.py"),
        llm=LLM,
        judge_model=LLM_JUDGE_MODEL,
        cache=LLM_CACHE,
    script:
        "../scripts/llm_rubrics.py"
