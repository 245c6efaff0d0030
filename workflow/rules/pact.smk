# PACT: the aligned model's safe answers, safety tokens (Eq. 1-2), and the frozen reference's logits on
# them in both views, computed once per fine-tuning set and reused by every PACT run (docs/methods.md §2).
from tokensafe.rerun import stage_keys
from tokensafe.methods.pact.ladder import LADDER

PACT_DIR = "results/pact"
PACT_METHODS = list(LADDER)  # the ablation ladder, full-vocabulary KL first and full PACT last


def pact_stage_settings(keys):
    """Settings of a PACT preparation stage: the keys of config["pact"] it reads (tokensafe.rerun.stage_keys)."""
    return stage_settings(stage_keys.pick(config["pact"], keys))


for _m in PACT_METHODS:
    # Each rung's fine-tune reads the keys of its parts of the objective only (tokensafe.rerun.stage_keys).
    METHOD_SETTINGS[_m] = lambda _m=_m: stage_keys.pick(config["pact"], stage_keys.pact_finetune_keys(LADDER[_m]))
for _m in [m for m in PACT_METHODS if LADDER[m]["tokens"]]:
    FINETUNE_INPUTS[_m] = lambda wc: {
        "safety_tokens": f"{PACT_DIR}/safety_tokens.parquet",
        "reference": f"{PACT_DIR}/p{wc.ratio}/s{wc.seed}/reference.safetensors",
    }


def pact_report_inputs():
    return (
        [f"{PACT_DIR}/safety_tokens.parquet"] if any(LADDER[m]["tokens"] for m in PACT_METHODS if m in METHODS) else []
    )


def pact_conflict_inputs():
    """Weight-conflict summaries of the fine-tuning sets that a weighted PACT method trains on."""
    weighted = [m for m in PACT_METHODS if LADDER[m]["weights"] and m in METHODS]
    sets = sorted(
        {(r, s) for m in weighted for r in method_ratios(m) for s in method_seeds(m)}, key=lambda x: (float(x[0]), x[1])
    )
    return [f"{PACT_DIR}/p{r}/s{s}/weight_conflicts.json" for r, s in sets]


rule pact_safe_responses:
    input:
        prompts="results/data/safety_prompts.parquet",
        aligned=model_input("aligned"),
    output:
        f"{PACT_DIR}/safe_responses.parquet",
    log:
        "logs/pact_safe_responses.log",
    benchmark:
        "benchmarks/pact_safe_responses.tsv"
    priority: PRIORITY["prep"]
    threads: threads_for("generate")
    resources:
        **resources_for("generate"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("pact_safe_responses.py"),
        aligned=model_ref("aligned"),
        settings=pact_stage_settings(stage_keys.PACT_SAFE_RESPONSES),
        # Of the generation settings only the batch size (the answers are greedy, R tokens long: pact.*);
        # it stays a rerun trigger because padded batches of another size can round differently.
        batch_size=config["generation"]["batch_size"],
        # The refusal keywords filter the answers only with pact.filter_refusals.
        keywords=config["judge"]["keywords"] if config["pact"]["filter_refusals"] else [],
    script:
        "../scripts/pact_safe_responses.py"


rule pact_safety_tokens:
    input:
        responses=f"{PACT_DIR}/safe_responses.parquet",
        aligned=model_input("aligned"),
        base=model_input("base"),
    output:
        f"{PACT_DIR}/safety_tokens.parquet",
    log:
        "logs/pact_safety_tokens.log",
    benchmark:
        "benchmarks/pact_safety_tokens.tsv"
    priority: PRIORITY["prep"]
    threads: threads_for("generate")
    resources:
        **resources_for("generate"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("pact_safety_tokens.py"),
        aligned=model_ref("aligned"),
        base=model_ref("base"),
        settings=pact_stage_settings(stage_keys.PACT_SAFETY_TOKENS),
    script:
        "../scripts/pact_safety_tokens.py"


rule pact_reference:
    input:
        data="results/data/finetune/p{ratio}/s{seed}.parquet",
        tokens=f"{PACT_DIR}/safety_tokens.parquet",
        aligned=model_input("aligned"),
    output:
        reference=f"{PACT_DIR}/p{{ratio}}/s{{seed}}/reference.safetensors",
        conflicts=report(
            f"{PACT_DIR}/p{{ratio}}/s{{seed}}/weight_conflicts.json",
            caption="../report/pact_conflicts.rst",
            category="Fine-tuning",
            subcategory="PACT weight conflicts",
            labels={"poison ratio": "{ratio}", "seed": "{seed}"},
        ),
    log:
        "logs/pact_reference/p{ratio}_s{seed}.log",
    benchmark:
        "benchmarks/pact_reference/p{ratio}_s{seed}.tsv"
    priority: PRIORITY["prep"]
    threads: threads_for("generate")
    resources:
        **resources_for("generate"),
    params:
        # The package code this stage runs (tokensafe.rerun.codeversion): a change to it reruns the stage.
        code=code_version("pact_reference.py"),
        aligned=model_ref("aligned"),
        settings=pact_stage_settings(stage_keys.PACT_REFERENCE),
    script:
        "../scripts/pact_reference.py"
