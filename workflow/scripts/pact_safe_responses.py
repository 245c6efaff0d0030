from tokensafe.logs import setup
from tokensafe.pipeline.pact import write_safe_responses

setup(snakemake.log[0])
p = snakemake.params
write_safe_responses(p.aligned, snakemake.input.prompts, p.settings, p.generation, p.keywords, snakemake.output[0])
