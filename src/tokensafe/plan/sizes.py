"""What the cost plan knows of sizes: model parameter counts (the embedded world's shapes, a local config.json, or
known hub ids), the rows of data files not yet fetched, the token lengths of each data role, and the sizes of
lm-evaluation-harness tasks. Torch-free."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tokensafe import modelref

KNOWN_PARAMS = {
    "meta-llama/Meta-Llama-3-8B": 8.03e9,
    "meta-llama/Meta-Llama-3-8B-Instruct": 8.03e9,
    "meta-llama/Llama-3.1-8B": 8.03e9,
    "meta-llama/Llama-3.1-8B-Instruct": 8.03e9,
    "meta-llama/Llama-Guard-3-8B": 8.03e9,
    "meta-llama/Llama-2-7b-hf": 6.74e9,
    "meta-llama/Llama-2-7b-chat-hf": 6.74e9,
    "meta-llama/Llama-2-13b-chat-hf": 13.0e9,
    "Qwen/Qwen2.5-7B": 7.62e9,
    "Qwen/Qwen2.5-7B-Instruct": 7.62e9,
    "Qwen/Qwen2.5-1.5B-Instruct": 1.54e9,
    "Qwen/Qwen2.5-0.5B-Instruct": 0.49e9,
    "cais/HarmBench-Llama-2-13b-cls": 13.0e9,
    "allenai/wildguard": 7.24e9,
    "mistralai/Mistral-7B-Instruct-v0.3": 7.25e9,
}

# Rows of the files `make data` writes (tokensafe.data.fetch.catalog), for a plan made before they are fetched.
CATALOG_ROWS = {
    "data/toss/slimorca_pool.jsonl": 112_000,
    "data/toss/slimorca_eval.jsonl": 500,
    "data/toss/slimorca_utility_ref.jsonl": 22_400,
    "data/toss/harmful_ref.jsonl": 22_400,
    "data/toss/red_team.jsonl": 22_400,  # at least (min_rows); the mixing draws round(P * n_finetune)
    "data/hexphi": 300,  # the 10 public categories x 30
    "data/gsm8k/train.jsonl": 7_473,
    "data/gsm8k/test.jsonl": 1_319,
    "data/gsm8k/utility_ref.jsonl": 1_000,
    "data/advbench/harmful_behaviors.csv": 520,
    "data/strongreject/strongreject_dataset.csv": 313,
}

# The embedded world's rows per role: its WorldSizes field (the safety demonstrations are 200, written by
# tokensafe.world.corpus itself).
WORLD_ROWS = {
    "task": "task_pool",
    "poison": "poison_pool",
    "task_eval": "task_test",
    "harmful_eval": "harmful_eval",
    "harmful_ref": "harmful_ref",
    "utility_ref": "utility_ref",
    "safety_prompts": "safety_prompts",
    "safety_demos": 200,
}
# The embedded world's token lengths (median prompt / response tokens of its tables under the world's tokenizer,
# from the data card of the default run): a world row is about 15 + 20 tokens.
WORLD_LENGTHS = {"prompt": 15, "response": 20}
# lm-evaluation-harness tasks: items per run (the tasks' test / validation sizes) and requests per item (one per
# answer choice for multiple choice). Tokens per request are an assumption (few-shot 0, chat template), stated.
LM_EVAL_TASKS = {
    "mmlu": {"items": 14_042, "requests": 4, "tokens": 120},
    "hellaswag": {"items": 10_042, "requests": 4, "tokens": 110},
    "gsm8k": {"items": 1_319, "requests": 1, "tokens": 900},  # 5-shot prompt + up to 256 generated tokens
    "arc_challenge": {"items": 1_172, "requests": 4, "tokens": 60},
}


def model_params(ref: str, config: dict | None = None, arch_key: str = "model") -> tuple[float, str]:
    """(parameter count, where it came from) of a model reference: the embedded world's config, a local folder's
    config.json, or :data:`KNOWN_PARAMS`. An unknown hub id raises ValueError naming it."""
    if modelref.is_embedded(ref):
        world = (config or {}).get("world", {})
        arch = world.get(arch_key) or world.get("model", {})
        return _llama_params(world.get("vocab_size", 1500), arch["hidden"], arch["layers"], arch["intermediate"]), (
            f"world.{arch_key}"
        )
    name = ref[len(modelref.HUB_PREFIX) :] if ref.startswith(modelref.HUB_PREFIX) else ref
    cfg = Path(name) / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        kv = c["hidden_size"] * c.get("num_key_value_heads", c["num_attention_heads"]) // c["num_attention_heads"]
        n = _llama_params(
            c["vocab_size"],
            c["hidden_size"],
            c["num_hidden_layers"],
            c["intermediate_size"],
            kv,
            c.get("tie_word_embeddings", False),
        )
        return n, f"{cfg}"
    if name in KNOWN_PARAMS:
        return KNOWN_PARAMS[name], "known sizes (tokensafe.plan.jobs.KNOWN_PARAMS)"
    raise ValueError(
        f"model {ref!r}: its size is unknown to the plan: give a local folder (its config.json is read) or add it "
        "to tokensafe.plan.jobs.KNOWN_PARAMS"
    )


def _llama_params(vocab: int, hidden: int, layers: int, inter: int, kv: int | None = None, tied: bool = True) -> float:
    kv = hidden if kv is None else kv
    per_layer = hidden * (hidden + 2 * kv) + hidden * hidden + 3 * hidden * inter + 2 * hidden
    return float(vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden)


@dataclass
class Lengths:
    """Mean prompt / response tokens per data role, and how they were found."""

    prompt: dict[str, float]
    response: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def row(self, role: str, max_length: int) -> float:
        """Tokens of a training row of ``role`` (prompt + response, cut at max_length)."""
        return min(float(max_length), self.prompt[role] + self.response[role])


def lengths(config: dict, tables: dict | None = None, card: dict | None = None) -> Lengths:
    """Token lengths per role: a run's data card (measured with the model's tokenizer), else the loaded tables
    (characters / 4, an approximation), else the embedded world's, else half of max_length each (an upper
    bound for a training row)."""
    from tokensafe.data.roles import ROLES

    prompt, response, how = {}, {}, {}
    half = config["max_length"] / 2
    for role in ROLES:
        spec = config["data"].get(role, "embedded")
        entry = ((card or {}).get("roles") or {}).get(role, {}).get("lengths") or {}
        if entry.get("prompt_tokens"):
            prompt[role] = float(entry["prompt_tokens"]["median"])
            resp = entry.get("response_tokens")
            response[role] = float(resp["median"]) if resp else 0.0
            how[role] = "data card"
        elif tables and role in tables and len(tables[role]):
            df = tables[role]
            prompt[role] = float(df["prompt"].astype(str).str.len().mean()) / 4
            response[role] = float(df["response"].fillna("").astype(str).str.len().mean()) / 4
            how[role] = "characters / 4"
        elif spec == "embedded":
            prompt[role], response[role] = float(WORLD_LENGTHS["prompt"]), float(WORLD_LENGTHS["response"])
            how[role] = "embedded world"
        else:
            prompt[role], response[role] = half, half
            how[role] = "upper bound"
    notes = []
    for kind in ("data card", "characters / 4", "upper bound"):
        roles = [r for r, h in how.items() if h == kind]
        if roles and kind == "upper bound":
            notes.append(
                f"token lengths of {', '.join(roles)} unknown (file not loaded): each prompt and response taken "
                f"as max_length / 2 = {half:g} tokens, an upper bound; a finished data card (results/data/card.json "
                "in --directory) gives the measured lengths"
            )
        elif roles and kind == "characters / 4":
            notes.append(f"token lengths of {', '.join(roles)}: characters / 4 of the loaded files (approximate)")
        elif roles:
            notes.append(f"token lengths of {', '.join(roles)}: the data card (measured)")
    return Lengths(prompt, response, notes)


def lm_eval_tokens(config: dict, tasks: list[str], task_rows: int, task_prompt: float, task_new: int) -> float:
    """Tokens one lm_eval job reads and writes: the offline task from the task test set, lm-eval's tasks from
    their sizes (:data:`LM_EVAL_TASKS`; a task not listed there counts 0 and the plan says so)."""
    limit = (config.get("utility_benchmarks") or {}).get("limit")
    total = 0.0
    for t in tasks:
        if t == "tokensafe_task":
            items, per = task_rows, task_prompt + task_new
        elif t in LM_EVAL_TASKS:
            spec = LM_EVAL_TASKS[t]
            items, per = spec["items"], spec["requests"] * spec["tokens"]
        else:
            continue
        if limit:
            items = math.ceil(items * limit) if limit < 1 else min(items, int(limit))
        total += items * per
    return total


def unknown_lm_eval_tasks(config: dict) -> list[str]:
    tasks = (config.get("utility_benchmarks") or {}).get("tasks") or []
    return [t for t in tasks if t != "tokensafe_task" and t not in LM_EVAL_TASKS]
