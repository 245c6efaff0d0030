# PACT: the aligned model's safe answers, safety tokens (Eq. 1-2), and the frozen reference's logits on
# them in both views, computed once per fine-tuning set and reused by every PACT run (docs/methods.md §2).
# Each rung's settings and fine-tune inputs are declared in tokensafe.methods.registry.
from tokensafe.methods.registry import PACT_DIR
from tokensafe.plan.run_settings import pact_stage_settings
from tokensafe.rerun import stage_keys


rule pact_safe_responses:
    input:
        prompts="results/data/safety_prompts.parquet",
        aligned=MODEL_INPUT["aligned"],
    output:
        f"{PACT_DIR}/safe_responses.parquet",
    log:
        "logs/pact_safe_responses.log",
    benchmark:
        "benchmarks/pact_safe_responses.tsv"
    priority: PRIORITY["prep"]
    threads: threads_for(config, "generate")
    resources:
        **resources_for(config, "generate", "pact_safe_responses"),
    params:
        code=code_version("pact_safe_responses.py"),
        aligned=MODEL_REF["aligned"],
        settings=pact_stage_settings(config, stage_keys.PACT_SAFE_RESPONSES),
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
        aligned=MODEL_INPUT["aligned"],
        base=MODEL_INPUT["base"],
    output:
        f"{PACT_DIR}/safety_tokens.parquet",
    log:
        "logs/pact_safety_tokens.log",
    benchmark:
        "benchmarks/pact_safety_tokens.tsv"
    priority: PRIORITY["prep"]
    threads: threads_for(config, "generate")
    resources:
        **resources_for(config, "generate", "pact_safety_tokens"),
    params:
        code=code_version("pact_safety_tokens.py"),
        aligned=MODEL_REF["aligned"],
        base=MODEL_REF["base"],
        settings=pact_stage_settings(config, stage_keys.PACT_SAFETY_TOKENS),
    script:
        "../scripts/pact_safety_tokens.py"


rule pact_reference:
    input:
        data="results/data/finetune/p{ratio}/s{seed}.parquet",
        tokens=f"{PACT_DIR}/safety_tokens.parquet",
        aligned=MODEL_INPUT["aligned"],
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
    threads: threads_for(config, "generate")
    resources:
        **resources_for(config, "generate", "pact_reference"),
    params:
        code=code_version("pact_reference.py"),
        aligned=MODEL_REF["aligned"],
        settings=pact_stage_settings(config, stage_keys.PACT_REFERENCE),
    script:
        "../scripts/pact_reference.py"
