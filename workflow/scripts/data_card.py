from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.stages.data_prep import write_card

p = snakemake.params
write_card(
    data_cfg=p.data,
    tables={r: snakemake.input[f"table_{r}"] for r in p.roles},
    sources={r: list(snakemake.input[f"source_{r}"]) for r in p.roles},
    tokenizer=p.tokenizer,
    template=p.template,
    max_length=p.max_length,
    out_json=snakemake.output.json,
    out_md=snakemake.output.md,
    overlap=snakemake.input.overlap,
)
