from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.runtime.launch import run_stage

p = snakemake.params
run_stage(
    "tokensafe.methods.toss.reference_models:train_reference",
    dict(
        aligned=p.aligned,
        table_paths=[snakemake.input.data],
        settings=p.settings,
        out_dir=snakemake.output[0],
        info={"kind": snakemake.wildcards.kind},
    ),
    n_gpus=int(snakemake.resources.get("gpu", 0)),
)
