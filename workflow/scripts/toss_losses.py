from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.toss import dump_losses

p = snakemake.params
dump_losses(p.aligned, snakemake.input.adapter, snakemake.input.data, p.settings, snakemake.output[0])
