from tokensafe.io import read_parquet
from tokensafe.logs import setup
from tokensafe.report import render

setup(snakemake.log[0])
render(read_parquet(snakemake.input.summary), snakemake.output.md, snakemake.output.png)
