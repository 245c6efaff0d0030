from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.runtime.launch import run_stage

p = snakemake.params
extra = {k: v for k, v in snakemake.input.items() if k not in ("data", "aligned")}
# More than one GPU: data-parallel under `accelerate launch`; otherwise in this process.
run_stage(
    "tokensafe.stages.finetune:run_finetune",
    dict(
        method=p.settings["method"],
        data_path=snakemake.input.data,
        aligned=p.aligned,
        settings=p.settings,
        out_dir=snakemake.output[0],
        inputs=extra,
        threads=snakemake.threads,
    ),
    n_gpus=int(snakemake.resources.get("gpu", 0)),
)
