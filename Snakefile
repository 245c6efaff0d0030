# tokensafe: safe LLM fine-tuning as a DAG. Stages live in workflow/rules, method code in src/tokensafe.
from snakemake.utils import min_version

min_version("9.0")


# `snakemake --report results/report.html` after a run: this description, the outputs marked report() in the
# rules (captions in workflow/report/), runtimes and provenance.
report: "workflow/report/workflow.rst"


# A --configfile is a complete config (config/presets/*.yaml) and replaces config.yaml; --config still
# overrides single keys of whichever config is in use.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/world.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/toss.smk"
include: "workflow/rules/pact.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/benchmarks.smk"
include: "workflow/rules/llm_judge.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/data/overlap.json",
        "results/summary.csv",
        "results/summary.parquet",
        "results/summary_by_method.csv",
        "results/comparisons.csv",
        "results/judge_agreement.csv",
        "results/lm_eval.csv",
        "results/report.md",
        "results/safety_utility.png",
