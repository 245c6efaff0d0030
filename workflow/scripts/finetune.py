from tokensafe.logs import setup
from tokensafe.pipeline.finetune import run_finetune

setup(snakemake.log[0])
p = snakemake.params
extra = {k: v for k, v in snakemake.input.items() if k not in ("data", "aligned")}
run_finetune(p.settings["method"], snakemake.input.data, p.aligned, p.settings, snakemake.output[0], extra, snakemake.threads)
