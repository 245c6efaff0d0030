from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.pipeline.generate import run_generate

p = snakemake.params
adapter = snakemake.input.adapter[0] if snakemake.input.adapter else None
run_generate(p.aligned, adapter, snakemake.input.harmful, snakemake.input.task, p.generation, p.settings,
             snakemake.output[0], snakemake.threads)
