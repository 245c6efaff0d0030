from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.methods.pact.safety_tokens import write_safety_tokens

p = snakemake.params
write_safety_tokens(
    aligned=p.aligned,
    base=p.base,
    responses_path=snakemake.input.responses,
    settings=p.settings,
    out=snakemake.output[0],
)
