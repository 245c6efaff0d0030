from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.stages.data_prep import write_source

world_table = snakemake.input[0] if snakemake.params.spec == "embedded" else None
write_source(
    name=snakemake.wildcards.source, spec=snakemake.params.spec, world_table=world_table, out=snakemake.output[0]
)
