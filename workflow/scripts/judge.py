from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.eval.generation.vllm_backend import stage_python
from tokensafe.runtime.launch import run_stage

p = snakemake.params
run_stage(
    "tokensafe.stages.safety_judging:run_judge",
    dict(
        generations=snakemake.input.generations,
        guard=p.guard,
        judge_cfg=p.judge,
        guard_ref=p.guard_ref,
        out=snakemake.output[0],
        dtype=p.dtype,
        threads=snakemake.threads,
        backend=p.backend,
        vllm_cfg=p.vllm,
    ),
    n_gpus=0,
    log=snakemake.log[0],
    # generation.backend: vllm judges with the same engine kind, in the vLLM environment.
    python=stage_python() if p.backend == "vllm" else None,
)
