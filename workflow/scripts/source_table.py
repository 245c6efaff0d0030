from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.data import write_source

world_table = snakemake.input[0] if snakemake.params.spec == "embedded" else None
write_source(snakemake.wildcards.source, snakemake.params.spec, world_table, snakemake.output[0])
