from tokensafe.logs import setup
from tokensafe.pipeline.pact import write_reference_signals

setup(snakemake.log[0])
p = snakemake.params
write_reference_signals(p.aligned, snakemake.input.data, snakemake.input.tokens, p.settings, snakemake.output[0])
