from tokensafe.logs import setup
from tokensafe.pipeline.summary import write_summary

setup(snakemake.log[0])
runs = [dict(r, generations=f"results/runs/{r['run']}/generations.parquet", judgments=f"results/runs/{r['run']}/judgments.parquet")
        for r in snakemake.params.runs]
write_summary(runs, snakemake.params.metric, snakemake.output.csv, snakemake.output.parquet)
