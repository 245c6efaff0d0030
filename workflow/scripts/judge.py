from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.stages.judging import run_judge

p = snakemake.params
run_judge(
    generations=snakemake.input.generations,
    guard=p.guard,
    judge_cfg=p.judge,
    guard_ref=p.guard_ref,
    out=snakemake.output[0],
    dtype=p.dtype,
    threads=snakemake.threads,
    backend=p.backend,
)
