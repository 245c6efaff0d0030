from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.stages.generation import run_generate

p = snakemake.params
adapter = snakemake.input.adapter[0] if snakemake.input.adapter else None
run_generate(
    aligned=p.aligned,
    adapter=adapter,
    harmful_path=snakemake.input.harmful,
    task_path=snakemake.input.task,
    gen_cfg=p.generation,
    settings=p.settings,
    out=snakemake.output[0],
    threads=snakemake.threads,
)
