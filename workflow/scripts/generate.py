from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

import os

from tokensafe.eval.generation.vllm_backend import ENV_ENGINE, stage_python
from tokensafe.runtime.launch import run_stage

p = snakemake.params
run_stage(
    "tokensafe.stages.generation:run_generate",
    dict(
        aligned=p.aligned,
        adapter=snakemake.input.adapter[0] if snakemake.input.adapter else None,
        harmful_path=snakemake.input.harmful,
        task_path=snakemake.input.task,
        gen_cfg=p.generation,
        settings=p.settings,
        out=snakemake.output[0],
        threads=snakemake.threads,
    ),
    n_gpus=0,
    log=snakemake.log[0],
    # generation.backend: vllm runs the stage in the vLLM environment, under launch's __main__ guard.
    # With a shared engine (generation.vllm.engine) the job is its client and stays here.
    python=stage_python() if p.generation["backend"] == "vllm" and os.environ.get(ENV_ENGINE) != "shared" else None,
)
