import torch

from tokensafe.logs import setup
from tokensafe.pipeline.world import build_base

setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
build_base(snakemake.input.data.rsplit("/", 1)[0], snakemake.input.tokenizer, snakemake.output[0], p.arch, p.train, p.seed, p.max_length)
