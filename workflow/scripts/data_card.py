from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.stages.data_prep import write_card

p = snakemake.params
write_card(
    data_cfg=p.data,
    tables={r: snakemake.input[f"table_{r}"] for r in p.roles},
    sources={r: list(snakemake.input[f"source_{r}"]) for r in p.roles},
    tokenizer=p.tokenizer,
    template=p.template,
    max_length=p.max_length,
    out_json=snakemake.output.json,
    out_md=snakemake.output.md,
    overlap=snakemake.input.overlap,
)
