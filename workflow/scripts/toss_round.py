from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.toss import dump_losses, make_mask

p, out = snakemake.params, snakemake.output
dump_losses(p.aligned, snakemake.input.adapter, snakemake.input.data, p.settings, out.losses)
make_mask(snakemake.input.utility, out.losses, p.d, p.selection, out.mask, out.summary,
          {"round": int(snakemake.wildcards.round), "poison_ratio": float(snakemake.wildcards.ratio),
           "seed": int(snakemake.wildcards.seed)})
