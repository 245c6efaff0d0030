from tokensafe.logs import setup
from tokensafe.pipeline.toss import dump_losses

setup(snakemake.log[0])
p = snakemake.params
dump_losses(p.aligned, snakemake.input.adapter, snakemake.input.data, p.settings, snakemake.output[0])
