from tokensafe.logs import setup
from tokensafe.pipeline.pact import write_safety_tokens

setup(snakemake.log[0])
p = snakemake.params
write_safety_tokens(p.aligned, p.base, snakemake.input.responses, p.settings, snakemake.output[0])
