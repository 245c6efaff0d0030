"""Overlap between the prompts a run trains on and the prompts it evaluates on (train/test leakage).

An evaluation prompt that a training role also holds is the leak: the fine-tuned model has seen that question
(and, for the task, its answer), so its accuracy or attack success rate on it measures memory, not the method.
The prompt is the unit compared (not the pair): an evaluation row has no training response to match, and the
same question with another answer is still a question seen in training.

Two prompts match when they are equal, or equal after :func:`normalise` (Unicode NFKC, casefold, runs of
whitespace as one space, punctuation and whitespace stripped at both ends): "What is 2+2?" and " what is 2+2 "
are one question. Counts are over the roles' whole tables: for ``data.task`` that is the pool the fine-tuning
sets are drawn from, so a set holds at most that many of the rows.

:func:`overlap_problems` stops the run at planning (``tokensafe.config.check_semantics``, on the sources loaded
there) unless ``data.allow_overlap`` names the pair; the ``data_overlap`` job writes :func:`overlap_report` to
``results/data/overlap.json`` from every table the run reads, hub and embedded ones included. The embedded
world's tables share no prompt by construction (``tokensafe.world.corpus``: the task splits exclude each
other's prompts, the harmful splits are drawn from disjoint (verb, target) pairs); tests/test_leakage.py checks it.
"""

from __future__ import annotations

import string
import unicodedata

import pandas as pd

from tokensafe.data.roles import ROLES

# The roles whose prompts a model trains on or answers in training (PACT's safety prompts are answered by the
# aligned model and then trained on), and the roles a run is scored on.
TRAIN_ROLES = ("task", "poison", "harmful_ref", "utility_ref", "safety_demos", "safety_prompts")
EVAL_ROLES = ("task_eval", "harmful_eval")
PAIRS = tuple(f"{t}/{e}" for t in TRAIN_ROLES for e in EVAL_ROLES)  # data.allow_overlap's values
EXAMPLES = 3  # examples named per pair
_STRIP = string.punctuation + string.whitespace + "\u00a0\u2018\u2019\u201c\u201d\u2026\u3000"
_EXCERPT = 80  # characters of a prompt shown in a message


def normalise(text: str) -> str:
    """The prompt as compared: NFKC, casefolded, whitespace collapsed, punctuation/whitespace stripped at the ends."""
    return " ".join(unicodedata.normalize("NFKC", str(text)).casefold().split()).strip(_STRIP)


def roles_in_use(config: dict) -> list[str]:
    """The data roles whose tables the run's jobs read (the rules' inputs), in :data:`ROLES` order."""
    from tokensafe.methods.registry import roles_used

    used = set(roles_used(list(config["methods"])))
    return [r for r in ROLES if r in used]


def source_name(spec) -> str:
    """Where a role's rows come from, as a message names it."""
    if spec == "embedded":
        return "embedded world"
    if not isinstance(spec, dict):
        return str(spec)
    return str(spec.get("path") or f"hub:{spec.get('hub')}")


def row_number(df: pd.DataFrame, i: int) -> int:
    """The row as the user counts the file's records: 1 is the first (a header line is not counted)."""
    return int(df["sample_id"].iloc[i]) + 1 if "sample_id" in df else i + 1


def excerpt(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def allowed_pairs(config: dict) -> set[str]:
    return set(config["data"].get("allow_overlap") or [])


def _pair(train: str, evals: str, tables: dict[str, pd.DataFrame], config: dict) -> dict:
    t, e = tables[train], tables[evals]
    t_exact, e_exact = list(t["prompt"].astype(str)), list(e["prompt"].astype(str))
    t_norm, e_norm = [normalise(p) for p in t_exact], [normalise(p) for p in e_exact]
    exact_set, norm_set = set(t_exact), set(t_norm)
    e_hits = [i for i, p in enumerate(e_norm) if p in norm_set]
    e_norm_hits = set(e_norm[i] for i in e_hits)
    first_train = {}
    for i, p in enumerate(t_norm):
        if p in e_norm_hits:
            first_train.setdefault(p, i)
    examples = []
    for i in e_hits[:EXAMPLES]:
        j = first_train[e_norm[i]]
        examples.append(
            {
                "eval": {"role": evals, "file": source_name(config["data"][evals]), "row": row_number(e, i)},
                "train": {"role": train, "file": source_name(config["data"][train]), "row": row_number(t, j)},
                "prompt": excerpt(e_exact[i]),
            }
        )
    return {
        "train": train,
        "eval": evals,
        "eval_rows": len(e_hits),  # evaluation rows whose prompt a training row holds (normalised)
        "eval_rows_exact": sum(p in exact_set for p in e_exact),  # ... character for character
        "train_rows": sum(p in e_norm_hits for p in t_norm),  # training rows holding an evaluation prompt
        "of_eval": len(e),
        "of_train": len(t),
        "allowed": f"{train}/{evals}" in allowed_pairs(config),
        "examples": examples,
    }


def overlap_report(config: dict, tables: dict[str, pd.DataFrame], roles: list[str] | None = None) -> dict:
    """Prompt overlap of every (training role, evaluation role) pair among ``tables`` (role -> canonical table)
    that the run reads (``roles``; default :func:`roles_in_use`); the roles not in ``tables`` are listed under
    ``unchecked``. ``config`` needs ``data`` (the sources, ``allow_overlap``) and, without ``roles``, ``methods``."""
    used = roles_in_use(config) if roles is None else roles
    pairs = [
        _pair(t, e, tables, config)
        for t in TRAIN_ROLES
        for e in EVAL_ROLES
        if t in used and e in used and t in tables and e in tables
    ]
    return {
        "normalisation": "Unicode NFKC, casefold, whitespace collapsed, punctuation/whitespace stripped at both ends",
        "compared": "prompt",
        "checked": [r for r in used if r in tables],
        "unchecked": [r for r in used if r not in tables],
        "allowed": sorted(allowed_pairs(config)),
        "pairs": [p for p in pairs if p["eval_rows"] or p["train_rows"]],
        "pairs_checked": len(pairs),
    }


def describe_pair(p: dict) -> str:
    """One message for an overlapping pair: counts, up to :data:`EXAMPLES` rows, and how to allow it."""
    exact = "" if p["eval_rows_exact"] == p["eval_rows"] else f" ({p['eval_rows_exact']} character for character)"
    head = (
        f"data.{p['eval']}: {p['eval_rows']} of {p['of_eval']} evaluation prompts{exact} are also training prompts "
        f"of data.{p['train']} ({p['train_rows']} of its {p['of_train']} rows)"
    )
    rows = "; ".join(
        f"{x['eval']['file']} row {x['eval']['row']} = {x['train']['file']} row {x['train']['row']}: {x['prompt']!r}"
        for x in p["examples"]
    )
    return (
        f"{head}: {rows}. Remove them from one file (e.g. a where: filter), or allow it on purpose with "
        f"data.allow_overlap: [{p['train']}/{p['eval']}]"
    )


def overlap_problems(report: dict) -> list[str]:
    """The overlapping pairs that ``data.allow_overlap`` does not allow, one message each."""
    return [describe_pair(p) for p in report["pairs"] if not p["allowed"]]
