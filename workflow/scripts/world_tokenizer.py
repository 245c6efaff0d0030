from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.world_data import build_tokenizer

build_tokenizer(snakemake.params.data_dir, snakemake.output[0], snakemake.params.vocab_size)
