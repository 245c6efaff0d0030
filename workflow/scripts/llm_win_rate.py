from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.stages.llm_judge_jobs import judge_job

p = snakemake.params
judge_job(
    measure="win_rate",
    generations=snakemake.input.generations,
    reference_generations=snakemake.input.reference,
    out=snakemake.output[0],
    llm=dict(p.llm),
    judge_model=p.judge_model,
    cache_root=p.cache,
    server_log="logs/llm_judge_server.log",
)
