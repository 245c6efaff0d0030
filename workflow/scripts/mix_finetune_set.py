from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.data import write_mix

p = snakemake.params
write_mix(snakemake.input.task, snakemake.input.poison, p.n, p.ratio, p.seed, snakemake.output[0])
