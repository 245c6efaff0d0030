from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

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
