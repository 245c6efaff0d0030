from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.stages.report import write_report

inp = snakemake.input
write_report(
    summary_path=inp.summary,
    by_method_path=inp.by_method,
    comparisons_path=inp.comparisons,
    lm_eval_path=inp.lm_eval,
    agreement_path=inp.agreement,
    toss_masks=list(inp.toss_masks),
    safety_tokens=inp.safety_tokens[0] if inp.safety_tokens else None,
    pact_conflicts=list(inp.pact_conflicts),
    llm_table=inp.get("llm"),
    card_md=inp.card,
    out_md=snakemake.output.md,
    out_png=snakemake.output.png,
)
