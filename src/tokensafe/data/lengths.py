"""Prompt lengths against the room a run gives them, at planning and where prompts are encoded.

Two limits, both in tokens of the prompt as the model sees it (:func:`tokensafe.chat.encode_prompt`: the run's
prompt template and the aligned model's tokenizer):

* a training row (``task``, ``poison``, ``harmful_ref``, ``utility_ref``, ``safety_demos``) needs room for at
  least one response token within ``max_length`` (:func:`tokensafe.chat.encode_pair` refuses it otherwise);
* a prompt the model answers (``harmful_eval``, ``task_eval``, and PACT's first ``pact.n_prompts`` safety
  prompts) needs room for its generation budget (``generation.max_new_tokens``, ``generation.task_max_new_tokens``,
  ``pact.response_tokens``) within the model's positions (``max_position_embeddings`` of its config.json; with
  the vLLM backend at most ``generation.vllm.max_model_len``).

At planning (:func:`length_report`) every loaded local source is measured and the rows over a limit stop the run,
each role with its file, rows and count. ``data.truncate_long_prompts: true`` instead cuts an over-long
evaluation prompt's text at the end until the templated prompt fits (:func:`fit_prompt_ids`, applied by
generation; the template's own tokens are kept) and records the count. Training rows are never truncated: a cut
question trains the model on a different question than the file holds; raise ``max_length`` or filter the rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tokensafe import modelref
from tokensafe.chat import encode_prompt, prompt_text
from tokensafe.data.leakage import excerpt, roles_in_use, row_number, source_name

TRAIN_WITH_RESPONSE = ("task", "poison", "harmful_ref", "utility_ref", "safety_demos")
EXAMPLES = 3  # rows named per role


def task_max_new_tokens(generation: dict) -> int:
    """The task prompts' generation budget: generation.task_max_new_tokens, else generation.max_new_tokens."""
    return int(generation.get("task_max_new_tokens", generation["max_new_tokens"]))


def _positions_from(cfg: dict) -> int | None:
    for node in (cfg, cfg.get("text_config") or {}):
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            if isinstance(node.get(key), int):
                return int(node[key])
    return None


def model_positions(ref: str) -> int | None:
    """The model's positions from its config.json (a local folder, or the hub's file in the local cache)."""
    name = modelref.load_name(ref)
    path = Path(name) / "config.json"
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    return _positions_from(json.loads(path.read_text()))


def generation_positions(config: dict, positions: int | None) -> int | None:
    """The positions generation may use: the model's, capped by the vLLM engine's max_model_len where set."""
    gen = config["generation"]
    cap = (gen.get("vllm") or {}).get("max_model_len") if gen.get("backend") == "vllm" else None
    if positions is None or cap is None:
        return positions if cap is None else int(cap)
    return min(positions, int(cap))


def planning_tokenizer(config: dict):
    """(tokenizer, positions, notice): the aligned model's tokenizer from its folder or the hub's local cache
    (the network is not tried at planning), else None and one line saying why the jobs check the lengths."""
    ref = config["models"]["aligned"]
    if modelref.is_embedded(ref):
        return (
            None,
            None,
            (
                "prompt lengths: models.aligned is embedded and its tokenizer is built by the world_tokenizer job: "
                "the lengths of data.* prompts are checked when the jobs encode them"
            ),
        )
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(modelref.load_name(ref), local_files_only=True)
        positions = model_positions(ref)
    except Exception as e:  # noqa: BLE001 - any failure leaves the check to the jobs, said in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (
            None,
            None,
            (
                f"prompt lengths: the tokenizer of models.aligned = {ref} could not be loaded at planning "
                f"({first[:160]}); the jobs check the lengths when they encode"
            ),
        )
    return tok, positions, None


def prompt_token_counts(tokenizer, prompts: list[str], template: str) -> list[int]:
    """Tokens of each prompt as :func:`tokensafe.chat.encode_prompt` gives them (one batched tokenizer call)."""
    texts = [prompt_text(tokenizer, p, template) for p in prompts]
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _limits(config: dict, positions: int | None, used: list[str]) -> dict[str, tuple[int | None, str, int | None]]:
    """role -> (most prompt tokens allowed, where that limit comes from, rows read or None for all)."""
    out: dict[str, tuple[int | None, str, int | None]] = {}
    for role in TRAIN_WITH_RESPONSE:
        if role in used:
            max_len = int(config["max_length"])
            out[role] = (max_len - 1, f"max_length = {max_len} leaves no room for a response", None)
    gen = config["generation"]
    pos = generation_positions(config, positions)
    budgets = {
        "harmful_eval": (int(gen["max_new_tokens"]), "generation.max_new_tokens", None),
        "task_eval": (
            task_max_new_tokens(gen),
            "generation.task_max_new_tokens",
            None,
        ),
    }
    if "pact" in config:
        budgets["safety_prompts"] = (
            int(config["pact"]["response_tokens"]),
            "pact.response_tokens",
            config["pact"]["n_prompts"],
        )
    for role, (budget, key, n) in budgets.items():
        if role in used:
            limit = None if pos is None else pos - budget
            out[role] = (limit, f"the model's {pos} positions less {key} = {budget}", n)
    return out


def length_report(
    config: dict, tables: dict[str, pd.DataFrame], tokenizer, positions: int | None, roles: list[str] | None = None
) -> dict:
    """Per role among ``tables`` the run reads (``roles``; default :func:`tokensafe.data.leakage.roles_in_use`):
    its limit, how many prompts exceed it and the first few rows."""
    used = roles_in_use(config) if roles is None else roles
    template = config["prompt_template"]
    roles = {}
    for role, (limit, why, n) in _limits(config, positions, used).items():
        if role not in tables or limit is None:
            continue
        df = tables[role] if n is None else tables[role].head(int(n))
        counts = prompt_token_counts(tokenizer, list(df["prompt"].astype(str)), template)
        over = [i for i, c in enumerate(counts) if c > limit]
        roles[role] = {
            "file": source_name(config["data"][role]),
            "limit": limit,
            "why": why,
            "rows": len(df),
            "too_long": len(over),
            "longest": max(counts, default=0),
            "examples": [
                {"row": row_number(df, i), "tokens": counts[i], "prompt": excerpt(df["prompt"].iloc[i])}
                for i in over[:EXAMPLES]
            ],
        }
    return {"template": template, "positions": generation_positions(config, positions), "roles": roles}


def length_problems(report: dict, truncate: bool) -> list[str]:
    """Roles with over-long prompts, one message each (evaluation roles not where truncation is on)."""
    out = []
    for role, r in report["roles"].items():
        if not r["too_long"] or (truncate and role not in TRAIN_WITH_RESPONSE and role != "safety_prompts"):
            continue
        rows = "; ".join(f"row {x['row']} ({x['tokens']} tokens): {x['prompt']!r}" for x in r["examples"])
        if role in TRAIN_WITH_RESPONSE:
            fix = "raise max_length or leave the long rows out (e.g. a where: filter)"
        elif role == "safety_prompts":
            fix = "lower pact.response_tokens or leave the long rows out"
        else:
            fix = "lower the generation budget, or cut them on purpose with data.truncate_long_prompts: true"
        out.append(
            f"data.{role} ({r['file']}): {r['too_long']} of {r['rows']} prompts are longer than {r['limit']} tokens "
            f"({r['why']}; prompt template {report['template']}): {rows}; {fix}"
        )
    return out


def truncation_record(report: dict) -> dict:
    """What ``data.truncate_long_prompts`` cuts: per evaluation role, the prompts over the limit."""
    return {
        role: {k: r[k] for k in ("file", "limit", "rows", "too_long", "examples")}
        for role, r in report["roles"].items()
        if role not in TRAIN_WITH_RESPONSE and role != "safety_prompts"
    }


def fit_prompt_ids(tokenizer, prompt: str, template: str, limit: int) -> tuple[list[int], bool]:
    """The prompt's ids cut to at most ``limit`` tokens by dropping the end of its text (the template kept), and
    whether anything was cut. Deterministic: the text is cut where a token of the bare prompt ends."""
    ids = encode_prompt(tokenizer, prompt, template)
    if len(ids) <= limit:
        return ids, False
    # Cut the text itself at the end of a token (the fast tokenizer's offsets): no decode round trip.
    ends = [e for _, e in tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    keep = len(ends) - (len(ids) - limit)
    while keep > 0:
        ids = encode_prompt(tokenizer, prompt[: ends[keep - 1]], template)
        if len(ids) <= limit:
            return ids, True
        keep -= max(1, len(ids) - limit)
    raise ValueError(f"the prompt template alone takes more than {limit} tokens: no prompt fits")


def encode_for_generation(
    tokenizer,
    prompts: list[str],
    template: str,
    positions: int | None,
    max_new_tokens: int,
    truncate: bool,
    what: str,
    rows: list[int] | None = None,
) -> tuple[list[list[int]], int]:
    """Each prompt's ids for generation and how many were cut. A prompt whose tokens and ``max_new_tokens`` exceed
    the model's ``positions`` is an error naming ``what`` and its row (``rows``: the file's row numbers; default
    the position in ``prompts``), or, with ``truncate``, cut to fit (:func:`fit_prompt_ids`)."""
    if positions is None:
        return [encode_prompt(tokenizer, p, template) for p in prompts], 0
    limit = positions - max_new_tokens
    if limit < 1:
        raise ValueError(f"{what}: {max_new_tokens} new tokens leave no room for a prompt in the model's {positions}")
    out, cut = [], 0
    for i, p in enumerate(prompts):
        ids = encode_prompt(tokenizer, p, template)
        if len(ids) > limit:
            if not truncate:
                raise ValueError(
                    f"{what} row {rows[i] if rows else i + 1}: prompt of {len(ids)} tokens and {max_new_tokens} new "
                    f"tokens exceed the model's {positions} positions ({excerpt(p)!r}); data.truncate_long_prompts: "
                    "true cuts such prompts"
                )
            ids, _ = fit_prompt_ids(tokenizer, p, template, limit)
            cut += 1
        out.append(ids)
    return out, cut


def model_positions_of(model) -> int | None:
    """A loaded model's positions (a peft wrapper forwards its base model's config)."""
    cfg = getattr(model, "config", None)
    return None if cfg is None else _positions_from(cfg.to_dict())
