from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.stages.data_prep import write_source

world_table = snakemake.input[0] if snakemake.params.spec == "embedded" else None
write_source(
    name=snakemake.wildcards.source, spec=snakemake.params.spec, world_table=world_table, out=snakemake.output[0]
)
