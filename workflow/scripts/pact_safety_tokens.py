from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.pact import write_safety_tokens

p = snakemake.params
write_safety_tokens(p.aligned, p.base, snakemake.input.responses, p.settings, snakemake.output[0])
