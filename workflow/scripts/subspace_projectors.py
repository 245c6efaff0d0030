from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.baselines import write_projectors

p = snakemake.params
write_projectors(p.aligned, p.base, p.target_modules, snakemake.output[0], p.dtype)
