from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.methods.pact.calibrated_reference import write_reference_signals

p = snakemake.params
write_reference_signals(
    aligned=p.aligned,
    data_path=snakemake.input.data,
    tokens_path=snakemake.input.tokens,
    settings=p.settings,
    out=snakemake.output.reference,
    out_conflicts=snakemake.output.conflicts,
    info={"poison_ratio": float(snakemake.wildcards.ratio), "seed": int(snakemake.wildcards.seed)},
)
