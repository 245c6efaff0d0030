from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.runtime.launch import run_stage

p = snakemake.params
run_stage(
    "tokensafe.methods.toss.reference_models:train_reference",
    dict(
        aligned=p.aligned,
        table_paths=[snakemake.input.data],
        settings=p.settings,
        out_dir=snakemake.output[0],
        info={"kind": snakemake.wildcards.kind},
    ),
    n_gpus=int(snakemake.resources.get("gpu", 0)),
)
