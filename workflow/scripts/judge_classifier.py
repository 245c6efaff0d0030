from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.runtime.launch import run_stage

p = snakemake.params
run_stage(
    "tokensafe.stages.classifier_judging:run_classifier_judge",
    dict(
        generations=snakemake.input.generations,
        classifier=snakemake.wildcards.classifier,
        model=p.model,
        out=snakemake.output[0],
        batch_size=p.batch_size,
        dtype=p.dtype,
        threads=snakemake.threads,
    ),
    n_gpus=0,
    log=snakemake.log[0],
)
