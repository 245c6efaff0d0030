from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.stages.summary import write_summary

runs = [
    dict(
        r,
        generations=f"results/runs/{r['run']}/generations.parquet",
        judgments=f"results/runs/{r['run']}/judgments.parquet",
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
    llm_reference=snakemake.params.get("llm_reference"),
    out_llm=snakemake.output.get("llm"),
)
