from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.stages.world_tables import build_tokenizer

build_tokenizer(
    data_dir=snakemake.input[0].rsplit("/", 1)[0], out_dir=snakemake.output[0], vocab_size=snakemake.params.vocab_size
)
