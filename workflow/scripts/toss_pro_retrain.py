from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.methods.toss.masking import select_samples
from tokensafe.runtime.launch import run_stage

p, inp, out = snakemake.params, snakemake.input, snakemake.output
t = int(snakemake.wildcards.round)
select_samples(
    util_path=inp.utility,
    harm_path=inp.scored,
    k=p.k,
    previous=inp.previous[0] if inp.previous else None,
    data_path=inp.data,
    out=out.picks,
    round_=t,
)
# D^h_t = D^h_0 plus every fine-tuning sample picked so far (whole samples, full-response SFT), from theta_0.
run_stage(
    "tokensafe.methods.toss.reference_models:train_reference",
    dict(
        aligned=p.aligned,
        table_paths=[inp.harmful_ref],
        settings=dict(p.settings, seed=p.settings["seed"] + t),
        out_dir=out.adapter,
        info={"kind": "harmful", "round": t},
        data_path=inp.data,
        picks_path=out.picks,
    ),
    n_gpus=int(snakemake.resources.get("gpu", 0)),
)
