from tokensafe.logs import setup
from tokensafe.pipeline.data import write_source

setup(snakemake.log[0])
world_table = snakemake.input[0] if snakemake.params.spec == "embedded" else None
write_source(snakemake.wildcards.source, snakemake.params.spec, world_table, snakemake.output[0])
