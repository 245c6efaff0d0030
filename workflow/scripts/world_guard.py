from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

import torch

from tokensafe.stages.world_models import build_guard

torch.set_num_threads(snakemake.threads)
p = snakemake.params
build_guard(
    data_dir=snakemake.input.data.rsplit("/", 1)[0],
    tokenizer_dir=snakemake.input.tokenizer,
    out_dir=snakemake.output[0],
    arch=p.arch,
    train_cfg=p.train,
    seed=p.seed,
)
