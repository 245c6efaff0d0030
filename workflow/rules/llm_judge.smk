# The LLM judge (judge.llm): per run, its win rate against the reference run's response to the same prompt and
# its rubric scores on the harmful prompts; which runs get which, and what each job reads of judge.llm, is
# planned in tokensafe.plan.llm_judge_runs (the jobs: tokensafe.stages.llm_judge_jobs).
from tokensafe.plan import llm_judge_runs
from tokensafe.plan.job_environment import vllm_python
from tokensafe.plan.run_settings import parse_run

LLM_ON = llm_judge_runs.enabled(config)
LLM_REF = llm_judge_runs.reference(config)
LLM_LOCAL = llm_judge_runs.local_server(config)
LLM_CACHE = "results/llm_judge_cache"
# An external judge's job is an HTTP client (the report family's resources); a job that may start a local judge
# server (per job on a cluster) asks for the judge family's (a GPU there, where the presets give one).
LLM_FAMILY = "judge" if LLM_LOCAL else "report"
LLM_JUDGE_MODEL = llm_judge_runs.judge_model(config)
LLM_JUDGE_INPUT = llm_judge_runs.judge_input(config)

if LLM_ON:
    _problem = llm_judge_runs.config_problem(config)
    if _problem:
        raise WorkflowError(f"config: {_problem}")
    if config["judge"]["llm"]["server"] == "vllm":
        try:
            vllm_python(config, workflow.basedir, "judge.llm.server")
        except ConfigError as e:
            raise WorkflowError(str(e)) from None
    _notice = llm_judge_runs.skipped_notice(config)
    if _notice:
        print(_notice, file=sys.stderr)


def llm_reference_input(wildcards):
    """The reference run's generations at the judged run's seed and the win rate's ratio."""
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
    priority: PRIORITY["evaluate"]
    group:
        eval_group
    threads: threads_for(config, LLM_FAMILY)
    resources:
        **resources_for(config, LLM_FAMILY, "llm_win_rate"),
        **GROUP_STEP,
    params:
        code=code_version("llm_win_rate.py"),
        llm=llm_judge_runs.win_rate_params(config),
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
    priority: PRIORITY["evaluate"]
    group:
        eval_group
    threads: threads_for(config, LLM_FAMILY)
    resources:
        **resources_for(config, LLM_FAMILY, "llm_rubrics"),
        **GROUP_STEP,
    params:
        code=code_version("llm_rubrics.py"),
        llm=llm_judge_runs.rubric_params(config),
        judge_model=LLM_JUDGE_MODEL,
        cache=LLM_CACHE,
    script:
        "../scripts/llm_rubrics.py"
