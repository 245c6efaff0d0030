from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

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
