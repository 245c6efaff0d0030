from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

from tokensafe.launch import run_stage
from tokensafe.pipeline.toss import select_samples

p, inp, out = snakemake.params, snakemake.input, snakemake.output
t = int(snakemake.wildcards.round)
select_samples(inp.utility, inp.scored, p.k, inp.previous[0] if inp.previous else None, inp.data, out.picks, t)
# D^h_t = D^h_0 plus every fine-tuning sample picked so far (whole samples, full-response SFT), from theta_0.
run_stage("tokensafe.pipeline.toss:train_reference",
          dict(aligned=p.aligned, table_paths=[inp.harmful_ref], settings=dict(p.settings, seed=p.settings["seed"] + t),
               out_dir=out.adapter, info={"kind": "harmful", "round": t}, data_path=inp.data, picks_path=out.picks),
          n_gpus=int(snakemake.resources.get("gpu", 0)))
