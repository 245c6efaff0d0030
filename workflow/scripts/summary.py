from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.summary import write_summary

runs = [dict(r, generations=f"results/runs/{r['run']}/generations.parquet", judgments=f"results/runs/{r['run']}/judgments.parquet")
        for r in snakemake.params.runs]
out = snakemake.output
write_summary(runs, snakemake.params.metric, out.csv, out.parquet, out.outcomes, out.by_method, out.comparisons,
              list(snakemake.input.toss_masks))
