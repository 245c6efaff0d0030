from tokensafe.logs import setup
from tokensafe.pipeline.world_data import build_tokenizer

setup(snakemake.log[0])
build_tokenizer(snakemake.params.data_dir, snakemake.output[0], snakemake.params.vocab_size)
