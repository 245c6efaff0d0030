from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.stages.summary import write_summary

runs = [
    dict(
        r,
        generations=f"results/runs/{r['run']}/generations.parquet",
        judgments=f"results/runs/{r['run']}/judgments.parquet",
        lm_eval=f"results/runs/{r['run']}/lm_eval.parquet" if snakemake.input.lm_eval else None,
        classifiers={n: f"results/runs/{r['run']}/classifiers/{n}.parquet" for n in snakemake.params.classifiers},
    )
    for r in snakemake.params.runs
]
out = snakemake.output
write_summary(
    runs=runs,
    metric=snakemake.params.metric,
    out_csv=out.csv,
    out_parquet=out.parquet,
    out_outcomes=out.outcomes,
    out_by_method=out.by_method,
    out_comparisons=out.comparisons,
    mask_summaries=list(snakemake.input.toss_masks),
    out_lm_eval=out.lm_eval,
    classifiers=list(snakemake.params.classifiers),
    out_agreement=out.agreement,
    llm_reference=snakemake.params.get("llm_reference"),
    out_llm=snakemake.output.get("llm"),
    card=snakemake.input.card,
)
