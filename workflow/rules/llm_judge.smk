import sys

# The LLM judge (judge.llm; tokensafe.stages.llm_judge_jobs): per run, its win rate against the reference run's
# response to the same prompt (the reference run itself gets none: 50 by definition; 'initial' gets one per
# poison ratio, against the reference at that ratio and seed) and its rubric scores on the harmful prompts.
# A run at a (ratio, seed) where the reference does not run gets no win rate (listed in the plan and the report).
# Every judge.llm key it reads is a param of each job (not of other jobs) (a rerun asks the judge only what its cache lacks).
LLM = config["judge"]["llm"]
LLM_ON = bool(LLM.get("enabled"))
LLM_WIN = LLM_ON and LLM.get("pairwise_template") is not None
LLM_RUBRICS = LLM_ON and bool(LLM.get("rubrics"))
LLM_REF = LLM.get("reference", "sft")
LLM_LOCAL = LLM_ON and LLM.get("server") in ("transformers", "vllm")
LLM_CACHE = "results/llm_judge_cache"
# An external judge's job is an HTTP client (the report family's resources); a job that may start a local judge
# server (per job on a cluster) asks for the judge family's (a GPU there, where the presets give one).
LLM_FAMILY = "judge" if LLM_LOCAL else "report"
# What each rule reads of judge.llm: the win rate not the rubrics, the rubrics not the pairwise template.
LLM_WIN_PARAMS = {k: v for k, v in LLM.items() if k != "rubrics"}
LLM_RUBRIC_PARAMS = {k: v for k, v in LLM.items() if k not in ("pairwise_template", "reference")}


def _llm_config_problem():
    if LLM["server"] == "external" and not (LLM.get("base_url") and LLM.get("model")):
        return "judge.llm.server external needs judge.llm.base_url and judge.llm.model"
    if LLM_LOCAL and LLM["model_path"] == "embedded" and config["models"]["aligned"] != "embedded":
        return (
            "judge.llm.model_path embedded is the embedded world's judge stand-in: it knows only the world's "
            "prompts and responses. With models.aligned a real model, point judge.llm at a real judge "
            "(docs/real-models.md, 'The LLM judge': server external with GPT-4o or your server, or model_path a "
            "local folder) or set judge.llm.enabled: false"
        )
    if not LLM_WIN:
        return None
    if LLM_REF not in METHODS:
        return f"judge.llm.reference {LLM_REF} is not in methods {METHODS}: every win rate is against its runs"
    return None


if LLM_ON:
    _problem = _llm_config_problem()
    if _problem:
        raise WorkflowError(f"config: {_problem}")
    if LLM["server"] == "vllm":
        from tokensafe.eval.generation.vllm_backend import ENV_PYTHON, VLLM_MISSING, vllm_env_problem

        _python = os.environ.get(ENV_PYTHON) or os.path.abspath(
            os.path.join(workflow.basedir, config["generation"]["vllm"]["python"])
        )
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


# The reference's (ratio, seed) cells: a run at a cell without one gets no win rate; the plan and the report say so.
LLM_REF_CELLS = {(r, int(s)) for r in method_ratios(LLM_REF) for s in method_seeds(LLM_REF)} if LLM_WIN else set()


def llm_paths(run):
    """The LLM-judge outputs of one run (a dict of all_runs()): {'llm_win_rate': path | None, 'llm_rubrics': ...,
    'llm_win_rate_skipped': True where the reference does not run at the run's ratio and seed}."""
    tag = ratio_tag(run["poison_ratio"])
    win = LLM_WIN and run["method"] != LLM_REF
    skipped = win and (tag, int(run["seed"])) not in LLM_REF_CELLS
    return {
        "llm_win_rate": f"results/runs/{run['run']}/llm_win_rate/p{tag}.parquet" if win and not skipped else None,
        "llm_rubrics": f"results/runs/{run['run']}/llm_rubrics.parquet" if LLM_RUBRICS else None,
        **({"llm_win_rate_skipped": True} if skipped else {}),
    }


_skipped = sorted(
    {(r["method"], r["poison_ratio"], r["seed"]) for r in all_runs() if llm_paths(r).get("llm_win_rate_skipped")}
)
if _skipped:
    print(
        f"judge.llm: no win rate vs {LLM_REF} for {len(_skipped)} run(s) where {LLM_REF} does not run at the same "
        "poison ratio and seed (listed in the report): " + ", ".join(f"{m} P={p:g} seed {s}" for m, p, s in _skipped),
        file=sys.stderr,
    )


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
    threads: threads_for(LLM_FAMILY)
    resources:
        **resources_for(LLM_FAMILY),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("llm_win_rate.py"),
        llm=LLM_WIN_PARAMS,
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
    threads: threads_for(LLM_FAMILY)
    resources:
        **resources_for(LLM_FAMILY),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("llm_rubrics.py"),
        llm=LLM_RUBRIC_PARAMS,
        judge_model=LLM_JUDGE_MODEL,
        cache=LLM_CACHE,
    script:
        "../scripts/llm_rubrics.py"
