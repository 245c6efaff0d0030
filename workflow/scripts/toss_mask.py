from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.methods.toss.masking import make_mask

p, inp, out = snakemake.params, snakemake.input, snakemake.output
make_mask(
    util_path=inp.utility,
    harm_path=inp.harmful,
    d=p.d,
    selection=p.selection,
    out_mask=out.mask,
    out_summary=out.summary,
    info={
        "round": int(snakemake.wildcards.round),
        "poison_ratio": float(snakemake.wildcards.ratio),
        "seed": int(snakemake.wildcards.seed),
    },
)
