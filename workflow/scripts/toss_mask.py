from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.toss import make_mask

p, inp, out = snakemake.params, snakemake.input, snakemake.output
make_mask(inp.utility, inp.harmful, p.d, p.selection, out.mask, out.summary,
          {"round": int(snakemake.wildcards.round), "poison_ratio": float(snakemake.wildcards.ratio),
           "seed": int(snakemake.wildcards.seed)})
