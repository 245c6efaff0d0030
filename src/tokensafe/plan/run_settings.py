"""The settings each job is planned with, as its rule's params: Snakemake reruns a job whose params changed.

:func:`run_settings` is everything that determines a fine-tuned model; it is hashed into every result row,
so two rows with the same hash come from the same settings. The preparation stages (TOSS, PACT, the
baselines' references) take the part of it that concerns the aligned model (:func:`stage_settings`) and
the config keys they read (tokensafe.rerun.stage_keys). The other functions pick what a generate, judge,
lm-eval or overlap job reads of its config section, and nothing else, so that another key reruns nothing.
Torch-free: the Snakefile calls these when it plans.
"""

from __future__ import annotations

from tokensafe.config import method_recipe
from tokensafe.data.lengths import task_max_new_tokens
from tokensafe.methods.registry import method_settings
from tokensafe.rerun import stage_keys
from tokensafe.runtime.numerics import numerics_label


def cpu_numerics(config: dict) -> str:
    """What the model stages' settings record of cpu_numerics: the mode and the environment it sets (a changed
    pin reruns the model work)."""
    return numerics_label(config["cpu_numerics"])


def _world_seed(config: dict):
    """The world seed defines the aligned model only when it is the embedded one."""
    return config["world_seed"] if config["models"]["aligned"] == "embedded" else None


def run_settings(config: dict, method: str, ratio, seed) -> dict:
    """Everything that determines a fine-tuned model of ``method`` at (poison ratio, seed); hashed into every row.
    The method's own settings come from its registry entry (``Method.settings``)."""
    return {
        "method": method,
        "poison_ratio": float(ratio),
        "seed": int(seed),
        "n_finetune": config["n_finetune"],
        "models": {k: config["models"][k] for k in ("base", "aligned")},
        "world_seed": _world_seed(config),
        "data": {k: config["data"][k] for k in ("task", "poison")},
        "prompt_template": config["prompt_template"],
        "max_length": config["max_length"],
        "lora": config["finetune"]["lora"],
        "recipe": method_recipe(config["finetune"], method),
        "dtype": config["models"].get("dtype", "auto"),
        "cpu_numerics": cpu_numerics(config),
        "method_settings": method_settings(config, method),
    }


def stage_settings(config: dict, settings: dict) -> dict:
    """Settings of a preparation stage that scores or trains on the aligned model (TOSS, PACT, baselines): what
    defines the aligned model and how it reads text, and the stage's own ``settings``."""
    base = run_settings(config, "sft", 0.0, 0)
    keys = ("models", "world_seed", "prompt_template", "max_length", "dtype", "cpu_numerics")
    return {**{k: base[k] for k in keys}, "method_settings": settings}


def initial_settings(config: dict, seed) -> dict:
    """The untrained aligned model ``initial``: no fine-tuning set, recipe or LoRA."""
    return {
        "method": "initial",
        "seed": int(seed),
        "models": {"aligned": config["models"]["aligned"]},
        "world_seed": _world_seed(config),
        "prompt_template": config["prompt_template"],
        "dtype": config["models"].get("dtype", "auto"),
        "cpu_numerics": cpu_numerics(config),
    }


def parse_run(run: str) -> tuple[str, str | None, str]:
    """'sft/p0.1/s1' -> ('sft', '0.1', '1'); 'initial/s1' -> ('initial', None, '1')."""
    parts = run.split("/")
    if parts[0] == "initial":
        return "initial", None, parts[1][1:]
    return parts[0], parts[1][1:], parts[2][1:]


def generation_settings(config: dict, run: str) -> dict:
    """The settings of the model a run's evaluation jobs load (a run path such as 'sft/p0.1/s1')."""
    method, ratio, seed = parse_run(run)
    return initial_settings(config, seed) if method == "initial" else run_settings(config, method, ratio, seed)


# Preparation stages: the config keys each reads (tokensafe.rerun.stage_keys), under stage_settings.


def toss_reference_settings(config: dict, seed: int = 0) -> dict:
    """What defines a TOSS reference model (and a TOSS-Pro retrain): LoRA and recipe (not d, the selection or the
    round count)."""
    return {**stage_settings(config, stage_keys.pick(config["toss"], stage_keys.TOSS_REFERENCE)), "seed": seed}


def toss_losses_settings(config: dict) -> dict:
    """What a loss dump reads besides its inputs (the adapter that scores): the cross-entropy chunk size. It stays
    a rerun trigger: chunks of another size are other matrix shapes, which can round differently."""
    return stage_settings(config, stage_keys.pick(config["toss"], stage_keys.TOSS_LOSSES))


def pact_stage_settings(config: dict, keys: tuple[str, ...]) -> dict:
    """Settings of a PACT preparation stage: the keys of config["pact"] it reads."""
    return stage_settings(config, stage_keys.pick(config["pact"], keys))


def aligned_loss_settings(config: dict) -> dict:
    """The aligned model's token losses (constrained SFT's reference): the loss dumps' chunk size."""
    return stage_settings(config, {"chunk_size": config["toss"].get("chunk_size", 1024)})


# Evaluation jobs: what each reads of its config section.


def generation_backend(config: dict) -> str:
    return config["generation"]["backend"]


def judge_backend(config: dict) -> str:
    """The guard judge's backend: judge.guard.backend, where 'generation' (the default) follows generation.backend."""
    backend = config["judge"]["guard"].get("backend", "generation")
    return generation_backend(config) if backend == "generation" else backend


def benchmark_backend(config: dict) -> str:
    return (config.get("utility_benchmarks") or {}).get("backend", "hf")


def vllm_params(config: dict) -> dict:
    """The vLLM engine settings that change outputs: neither the interpreter nor whether the engine is shared."""
    return {k: v for k, v in config["generation"]["vllm"].items() if k not in ("python", "engine")}


def generation_params(config: dict) -> dict:
    """What generation reads from config: the vLLM engine settings only with that backend."""
    gen = {k: v for k, v in config["generation"].items() if k != "vllm"}
    if generation_backend(config) == "vllm":
        gen["vllm"] = vllm_params(config)
    if config["data"]["truncate_long_prompts"]:  # only when on: the default reruns nothing (tokensafe.data.lengths)
        gen["truncate_long_prompts"] = True
    return gen


# The extra classifier judges' keys: read by the judge_classifier rule only, never by judge.
CLASSIFIER_KEYS = ("classifiers", "classifier_models", "classifier_batch_size")


def judge_params(config: dict) -> dict:
    """What judging reads from config besides its backend (a param of its own, :func:`judge_backend`): not the
    extra classifiers' keys (their own rule) nor judge.llm (the LLM-judge jobs' own section)."""
    judge = {k: v for k, v in config["judge"].items() if k not in CLASSIFIER_KEYS and k != "llm"}
    return {**judge, "guard": {k: v for k, v in config["judge"]["guard"].items() if k != "backend"}}


def bench_params(config: dict) -> dict:
    """What the lm-eval stage reads from utility_benchmarks: the vLLM engine settings only with that backend
    (a param of their own)."""
    return {k: v for k, v in (config.get("utility_benchmarks") or {}).items() if k != "vllm"}


def overlap_settings(config: dict, roles: list[str]) -> dict:
    """What the overlap job reads: the roles' sources and data.allow_overlap; the generation budgets and the
    template only with data.truncate_long_prompts (the record of what it cuts)."""
    data = {role: config["data"][role] for role in roles}
    out = {"data": {**data, "allow_overlap": sorted(config["data"]["allow_overlap"])}}
    if config["data"]["truncate_long_prompts"]:
        gen = config["generation"]
        out["data"]["truncate_long_prompts"] = True
        out["prompt_template"] = config["prompt_template"]
        out["generation"] = {
            "backend": gen["backend"],
            "max_new_tokens": gen["max_new_tokens"],
            "task_max_new_tokens": task_max_new_tokens(gen),
            "vllm": {"max_model_len": gen["vllm"].get("max_model_len")} if gen["backend"] == "vllm" else {},
        }
    return out
