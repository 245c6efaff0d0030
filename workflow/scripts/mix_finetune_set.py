from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.stages.data_prep import write_mix

p = snakemake.params
write_mix(
    task_path=snakemake.input.task,
    poison_path=snakemake.input.poison,
    n=p.n,
    ratio=p.ratio,
    seed=p.seed,
    out=snakemake.output[0],
)
