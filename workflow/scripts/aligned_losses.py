from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.train.loss_dumps import dump_losses

p = snakemake.params
# The frozen aligned model's per-token NLL: -log pi_ref, computed once per fine-tuning set.
dump_losses(
    aligned=p.aligned, adapter=None, data_path=snakemake.input.data, settings=p.settings, out=snakemake.output[0]
)
