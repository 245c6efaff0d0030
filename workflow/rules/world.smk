# The embedded world: generated data, a local tokenizer, tiny base / aligned / guard models.
# These rules only run when a model or data entry of the config is 'embedded'.
WORLD_SPLITS = [
    "task_train",
    "task_test",
    "poison_pool",
    "alignment",
    "harmful_eval",
    "harmful_ref",
    "utility_ref",
    "safety_prompts",
    "safety_demos",
    "guard_train",
    "pretrain",
]


rule world_data:
    output:
        expand(f"{WORLD}/data/{{split}}.parquet", split=WORLD_SPLITS),
    log:
        "logs/world_data.log",
    benchmark:
        "benchmarks/world_data.tsv"
    threads: 1
    resources:
        **resources_for(config, "data", "world_data"),
    params:
        code=code_version("world_data.py"),
        seed=config["world_seed"],
    script:
        "../scripts/world_data.py"


rule world_tokenizer:
    input:
        expand(f"{WORLD}/data/{{split}}.parquet", split=WORLD_SPLITS),
    output:
        directory(f"{WORLD}/tokenizer"),
    log:
        "logs/world_tokenizer.log",
    benchmark:
        "benchmarks/world_tokenizer.tsv"
    threads: 1
    resources:
        **resources_for(config, "data", "world_tokenizer"),
    params:
        code=code_version("world_tokenizer.py"),
        vocab_size=config["world"]["vocab_size"],
    script:
        "../scripts/world_tokenizer.py"


rule world_base:
    input:
        data=f"{WORLD}/data/pretrain.parquet",
        tokenizer=f"{WORLD}/tokenizer",
    output:
        directory(f"{WORLD}/base"),
    log:
        "logs/world_base.log",
    benchmark:
        "benchmarks/world_base.tsv"
    # Every model-based job waits for the base and aligned models: run them first (PRIORITY), on all
    # their threads (CPU results are bitwise the same with 1 or 2 threads; tests/test_world_threads.py).
    priority: PRIORITY["world"]
    threads: threads_for(config, "world")
    resources:
        **resources_for(config, "world", "world_base"),
    params:
        code=code_version("world_base.py"),
        arch=config["world"]["model"],
        train=config["world"]["pretrain"],
        seed=config["world_seed"],
        cpu_numerics=CPU_NUMERICS,
        max_length=config["max_length"],
    script:
        "../scripts/world_base.py"


rule world_aligned:
    input:
        data=f"{WORLD}/data/alignment.parquet",
        base=f"{WORLD}/base",
    output:
        directory(f"{WORLD}/aligned"),
    log:
        "logs/world_aligned.log",
    benchmark:
        "benchmarks/world_aligned.tsv"
    priority: PRIORITY["world"]
    threads: threads_for(config, "world")
    resources:
        **resources_for(config, "world", "world_aligned"),
    params:
        code=code_version("world_aligned.py"),
        train=config["world"]["align"],
        seed=config["world_seed"],
        cpu_numerics=CPU_NUMERICS,
        template=config["prompt_template"],
        max_length=config["max_length"],
    script:
        "../scripts/world_aligned.py"


rule world_guard:
    input:
        data=f"{WORLD}/data/guard_train.parquet",
        tokenizer=f"{WORLD}/tokenizer",
    output:
        directory(f"{WORLD}/guard"),
    log:
        "logs/world_guard.log",
    benchmark:
        "benchmarks/world_guard.tsv"
    # One thread, behind the base and aligned models (PRIORITY; no input links it to them, so their
    # settings do not retrain it): only the judges need the guard, so it trains beside the first
    # preparation jobs and fine-tunes instead of holding the world's models back.
    priority: PRIORITY["guard"]
    threads: 1
    resources:
        **resources_for(config, "world", "world_guard"),
    params:
        code=code_version("world_guard.py"),
        arch=config["world"]["guard_model"],
        train=config["world"]["guard"],
        seed=config["world_seed"],
        cpu_numerics=CPU_NUMERICS,
    script:
        "../scripts/world_guard.py"


rule world_judge:
    input:
        data=[f"{WORLD}/data/guard_train.parquet", f"{WORLD}/data/task_train.parquet"],
    output:
        directory(f"{WORLD}/judge"),
    log:
        "logs/world_judge.log",
    benchmark:
        "benchmarks/world_judge.tsv"
    # The LLM-judge stand-in (tokensafe.stages.world_llm_judge): one thread, beside the guard; only the LLM-judge
    # jobs need it.
    priority: PRIORITY["guard"]
    threads: 1
    resources:
        **resources_for(config, "world", "world_judge"),
    params:
        code=code_version("world_judge.py"),
        arch=config["world"]["judge_model"],
        train=config["world"]["judge"],
        data=config["world"]["judge_data"],
        seed=config["world_seed"],
        cpu_numerics=CPU_NUMERICS,
    script:
        "../scripts/world_judge.py"
