from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.stages.data_prep import write_mix

p = snakemake.params
write_mix(
    task_path=snakemake.input.task,
    poison_path=snakemake.input.poison,
    n=p.n,
    ratio=p.ratio,
    seed=p.seed,
    out=snakemake.output[0],
)
