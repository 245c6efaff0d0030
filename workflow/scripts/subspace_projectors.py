from tokensafe.logs import setup
from tokensafe.pipeline.baselines import write_projectors

setup(snakemake.log[0])
p = snakemake.params
write_projectors(p.aligned, p.base, p.target_modules, snakemake.output[0], p.dtype)
