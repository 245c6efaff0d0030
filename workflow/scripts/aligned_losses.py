from tokensafe.logs import setup
from tokensafe.pipeline.toss import dump_losses

setup(snakemake.log[0])
p = snakemake.params
# The frozen aligned model's per-token NLL: -log pi_ref, computed once per fine-tuning set.
dump_losses(p.aligned, None, snakemake.input.data, p.settings, snakemake.output[0])
