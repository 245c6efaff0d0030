from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

import torch

from tokensafe.stages.world_llm_judge import build_judge

torch.set_num_threads(snakemake.threads)
p = snakemake.params
build_judge(
    data_dir=snakemake.input.data[0].rsplit("/", 1)[0],
    out_dir=snakemake.output[0],
    arch=p.arch,
    train_cfg=p.train,
    seed=p.seed,
    vocab_size=p.data["vocab_size"],
    n_examples=p.data["examples"],
)
