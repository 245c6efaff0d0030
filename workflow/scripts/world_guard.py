from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

import torch

from tokensafe.pipeline.world import build_guard

torch.set_num_threads(snakemake.threads)
p = snakemake.params
build_guard(snakemake.input.data.rsplit("/", 1)[0], snakemake.input.tokenizer, snakemake.output[0], p.arch, p.train, p.seed)
