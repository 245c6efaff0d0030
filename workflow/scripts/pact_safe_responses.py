from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.pact import write_safe_responses

p = snakemake.params
write_safe_responses(p.aligned, snakemake.input.prompts, p.settings, {"batch_size": p.batch_size}, p.keywords, snakemake.output[0])
