from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.toss import dump_losses

p = snakemake.params
# The frozen aligned model's per-token NLL: -log pi_ref, computed once per fine-tuning set.
dump_losses(p.aligned, None, snakemake.input.data, p.settings, snakemake.output[0])
