from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.methods.baselines.subspace import write_projectors

p = snakemake.params
write_projectors(
    aligned=p.aligned, base=p.base, target_modules=p.target_modules, out=snakemake.output[0], dtype=p.dtype
)
