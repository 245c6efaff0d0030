from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

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
