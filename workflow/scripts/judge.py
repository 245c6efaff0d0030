from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.judge import run_judge

p = snakemake.params
run_judge(snakemake.input.generations, p.guard, p.judge, p.guard_ref, snakemake.output[0], p.dtype, snakemake.threads,
          p.backend)
