from tokensafe.logs import setup
from tokensafe.pipeline.judge import run_judge

setup(snakemake.log[0])
p = snakemake.params
run_judge(snakemake.input.generations, p.guard, p.judge, p.guard_ref, snakemake.output[0], p.dtype, snakemake.threads,
          p.backend)
