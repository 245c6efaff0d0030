from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.methods.pact.safety_tokens import write_safe_responses

p = snakemake.params
write_safe_responses(
    aligned=p.aligned,
    prompts_path=snakemake.input.prompts,
    settings=p.settings,
    gen_cfg={"batch_size": p.batch_size},
    keywords=p.keywords,
    out=snakemake.output[0],
)
