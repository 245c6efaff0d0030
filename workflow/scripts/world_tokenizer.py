from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.stages.world_tables import build_tokenizer

build_tokenizer(
    data_dir=snakemake.input[0].rsplit("/", 1)[0], out_dir=snakemake.output[0], vocab_size=snakemake.params.vocab_size
)
