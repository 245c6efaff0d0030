from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.stages.world_tables import write_world_tables

write_world_tables(out_dir=snakemake.output[0].rsplit("/", 1)[0], seed=snakemake.params.seed)
