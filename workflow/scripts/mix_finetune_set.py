from tokensafe.logs import setup
from tokensafe.pipeline.data import write_mix

setup(snakemake.log[0])
p = snakemake.params
write_mix(snakemake.input.task, snakemake.input.poison, p.n, p.ratio, p.seed, snakemake.output[0])
