import torch

from tokensafe.logs import setup
from tokensafe.pipeline.world import build_aligned

setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
build_aligned(snakemake.input.data.rsplit("/", 1)[0], snakemake.input.base, snakemake.output[0], p.train, p.seed, p.template, p.max_length)
