from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.runtime.launch import run_stage

p = snakemake.params
run_stage(
    "tokensafe.stages.classifier_judging:run_classifier_judge",
    dict(
        generations=snakemake.input.generations,
        classifier=snakemake.wildcards.classifier,
        model=p.model,
        out=snakemake.output[0],
        batch_size=p.batch_size,
        dtype=p.dtype,
        threads=snakemake.threads,
    ),
    n_gpus=0,
    log=snakemake.log[0],
)
