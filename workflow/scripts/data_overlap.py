from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.stages.data_checks import write_overlap

write_overlap(
    tables={role: snakemake.input[role] for role in snakemake.params.roles},
    settings=snakemake.params.settings,
    out=snakemake.output[0],
    aligned=snakemake.params.aligned,
)
