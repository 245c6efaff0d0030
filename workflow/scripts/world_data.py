from tokensafe.logs import setup
from tokensafe.pipeline.world_data import write_world_tables

setup(snakemake.log[0])
write_world_tables(out_dir=snakemake.output[0].rsplit("/", 1)[0], seed=snakemake.params.seed)
