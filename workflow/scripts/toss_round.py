from tokensafe.logs import setup
from tokensafe.pipeline.toss import dump_losses, make_mask

setup(snakemake.log[0])
p, out = snakemake.params, snakemake.output
dump_losses(p.aligned, snakemake.input.adapter, snakemake.input.data, p.settings, out.losses)
make_mask(snakemake.input.utility, out.losses, p.d, p.selection, out.mask, out.summary,
          {"round": int(snakemake.wildcards.round), "poison_ratio": float(snakemake.wildcards.ratio),
           "seed": int(snakemake.wildcards.seed)})
