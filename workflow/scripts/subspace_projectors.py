from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.methods.baselines.subspace import write_projectors

p = snakemake.params
write_projectors(
    aligned=p.aligned, base=p.base, target_modules=p.target_modules, out=snakemake.output[0], dtype=p.dtype
)
