from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.eval.generation.vllm_backend import stage_python
from tokensafe.runtime.launch import run_stage

p = snakemake.params
run_stage(
    "tokensafe.stages.benchmarks:run_lm_eval",
    dict(
        aligned=p.aligned,
        adapter=snakemake.input.adapter[0] if snakemake.input.adapter else None,
        task_data=snakemake.input.task_data or None,
        bench=p.bench,
        settings=p.settings,
        max_gen_toks=p.max_gen_toks,
        out=snakemake.output.tidy,
        out_json=snakemake.output.json,
        vllm_cfg=p.vllm,
        threads=snakemake.threads,
    ),
    n_gpus=0,
    log=snakemake.log[0],
    # backend vllm: lm-eval's vLLM model in the vLLM environment, under launch's __main__ guard.
    python=stage_python() if p.bench.get("backend", "hf") == "vllm" else None,
)
