from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.stages.world_tables import write_world_tables

write_world_tables(out_dir=snakemake.output[0].rsplit("/", 1)[0], seed=snakemake.params.seed)
