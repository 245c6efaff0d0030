# Aggregation: summary table (csv + parquet, one row per run), per-prompt outcomes, aggregates over seeds with
# 95 % intervals and noise verdicts (tokensafe.eval.statistics.stats), the markdown report and the safety-vs-utility plot.

from tokensafe.stages.summary import SUMMARY_COLUMNS


rule summary:
    input:
        card="results/data/card.json",
        generations=[f"results/runs/{r['run']}/generations.parquet" for r in all_runs()],
        judgments=[f"results/runs/{r['run']}/judgments.parquet" for r in all_runs()],
        lm_eval=lm_eval_outputs(),
        classifiers=[p for r in all_runs() for p in classifier_outputs(r["run"])],
        toss_masks=toss_report_inputs(),
        llm_win_rate=llm_outputs("llm_win_rate"),
        llm_rubrics=llm_outputs("llm_rubrics"),
    output:
        # judge.llm: per run and per (method, ratio) over seeds (tokensafe.stages.llm_judge_jobs.llm_table)
        **(
            {"llm": report("results/llm_judge.csv", caption="../report/llm_judge.rst", category="Evaluation")}
            if LLM_ON
            else {}
        ),
        csv=report("results/summary.csv", caption="../report/summary.rst", category="Summary"),
        parquet="results/summary.parquet",
        outcomes="results/outcomes.parquet",
        by_method=report("results/summary_by_method.csv", caption="../report/by_method.rst", category="Summary"),
        comparisons=report("results/comparisons.csv", caption="../report/comparisons.rst", category="Summary"),
        lm_eval=report("results/lm_eval.csv", caption="../report/lm_eval.rst", category="Evaluation"),
        agreement=report("results/judge_agreement.csv", caption="../report/agreement.rst", category="Evaluation"),
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    threads: 1
    resources:
        **resources_for("report"),
    params:
        **({"llm_reference": LLM_REF} if LLM_ON else {}),
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("summary.py"),
        runs=[
            {**{k: r[k] for k in ("method", "poison_ratio", "seed", "run")}, **(llm_paths(r) if LLM_ON else {})}
            for r in all_runs()
        ],
        metric=config["data"].get("task_metric", "number"),
        classifiers=CLASSIFIERS,
        # Not read by the script: a new column rebuilds an existing summary (Snakemake does not see package code).
        columns=SUMMARY_COLUMNS,
    script:
        "../scripts/summary.py"


rule report:
    input:
        **({"llm": "results/llm_judge.csv"} if LLM_ON else {}),
        card="results/data/card.md",
        summary="results/summary.parquet",
        by_method="results/summary_by_method.csv",
        comparisons="results/comparisons.csv",
        lm_eval="results/lm_eval.csv",
        agreement="results/judge_agreement.csv",
        toss_masks=toss_report_inputs(),
        safety_tokens=pact_report_inputs(),
        pact_conflicts=pact_conflict_inputs(),
    output:
        md=report("results/report.md", caption="../report/report_md.rst", category="Summary"),
        png=report("results/safety_utility.png", caption="../report/safety_utility.rst", category="Summary"),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    threads: 1
    resources:
        **resources_for("report"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("report.py"),
    script:
        "../scripts/report.py"
