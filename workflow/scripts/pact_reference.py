from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.pact import write_reference_signals

p = snakemake.params
write_reference_signals(p.aligned, snakemake.input.data, snakemake.input.tokens, p.settings, snakemake.output.reference,
                        snakemake.output.conflicts,
                        {"poison_ratio": float(snakemake.wildcards.ratio), "seed": int(snakemake.wildcards.seed)})
