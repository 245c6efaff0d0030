from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.stages.data_checks import write_overlap

write_overlap(
    tables={role: snakemake.input[role] for role in snakemake.params.roles},
    settings=snakemake.params.settings,
    out=snakemake.output[0],
    aligned=snakemake.params.aligned,
)
