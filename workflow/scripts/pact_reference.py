from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.methods.pact.calibrated_reference import write_reference_signals

p = snakemake.params
write_reference_signals(
    aligned=p.aligned,
    data_path=snakemake.input.data,
    tokens_path=snakemake.input.tokens,
    settings=p.settings,
    out=snakemake.output.reference,
    out_conflicts=snakemake.output.conflicts,
    info={"poison_ratio": float(snakemake.wildcards.ratio), "seed": int(snakemake.wildcards.seed)},
)
