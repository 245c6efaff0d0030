"""The data card: what every data role of a run was read from, so that every result can say what it measured.

One entry per role: the source (a path or a hub id, and the embedded world's table), the revision and upstream
of a fetched file (``data/SOURCES.lock.json``, written by ``python -m tokensafe.data.fetch``), the sha256 of each
file read, the filters of the source spec, the rows used and the token lengths under the run's tokenizer and
prompt template. Each entry has a hash; a run's card hash combines the entries of the roles it read, so two runs
on different harmful sets cannot give rows that look alike, and a changed file changes the hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from tokensafe.data.fetch.lockfile import LOCK  # written by the data command
from tokensafe.io import sha256_file

# The evaluation roles: their token counts are prompts only (tokensafe.methods.registry.run_roles says which
# roles each run reads).
EVAL_ROLES = ("task_eval", "harmful_eval")
# The spec keys that select rows or change their text (what the card calls the filters).
FILTER_KEYS = ("split", "subset", "where", "limit", "seed", "columns", "options", "header", "names")


def source_files(path: str | Path) -> list[dict[str, Any]]:
    """Every file a source path names (a file, or the files of a folder in name order) with size and sha256."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files]


def lock_entries(files: list[dict], lock: dict) -> list[dict]:
    """The lock file's record (upstream source, revision) of each file, where it has one."""
    by_path = {str(Path(k)): v for k, v in (lock.get("files") or lock).items() if isinstance(v, dict)}
    return [dict(by_path[str(Path(f["path"]))], file=f["path"]) for f in files if str(Path(f["path"])) in by_path]


def length_stats(lengths: list[int] | np.ndarray) -> dict[str, int]:
    a = np.asarray(lengths, dtype=np.int64)
    if a.size == 0:
        return {}
    return {
        "min": int(a.min()),
        "median": int(np.median(a)),
        "p95": int(np.percentile(a, 95, method="higher")),
        "max": int(a.max()),
    }


def token_lengths(table, tokenizer, template: str, max_length: int, training: bool) -> dict[str, Any]:
    """Prompt (and, for a training role, response) token counts through the shared tokenisation; how many
    training pairs the fine-tune truncates to ``max_length`` (the response is cut, never the prompt)."""
    from tokensafe.chat import end_of_turn_ids
    from tokensafe.data.lengths import prompt_token_counts

    p_len = prompt_token_counts(tokenizer, list(table.prompt), template)
    out: dict[str, Any] = {"prompt_tokens": length_stats(p_len)}
    if training and "response" in table:
        eot = len(end_of_turn_ids(tokenizer, template))
        responses = tokenizer([r.strip() for r in table.response], add_special_tokens=False)["input_ids"]
        r_len = [len(ids) + eot for ids in responses]
        out["response_tokens"] = length_stats(r_len)
        out["truncated_pairs"] = int(sum(p + r > max_length for p, r in zip(p_len, r_len)))
    return out


def entry_hash(entry: dict) -> str:
    blob = json.dumps(entry, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def role_entry(name: str, spec, table, files: list[dict], lock: dict, lengths: dict) -> dict[str, Any]:
    """One role's card entry (its hash over everything but the hash itself)."""
    if spec == "embedded":
        source: dict[str, Any] = {"kind": "embedded"}
    elif "hub" in spec:
        source = {"kind": "hub", "hub": spec["hub"], "revision": spec.get("revision")}
    else:
        source = {"kind": "file", "path": str(spec["path"]), "format": spec.get("format", "generic")}
    entry = {
        "role": name,
        "source": source,
        "filters": {k: spec[k] for k in FILTER_KEYS if isinstance(spec, dict) and spec.get(k) is not None},
        "files": files,
        "upstream": lock_entries(files, lock),
        "rows": int(len(table)),
        "sources": sorted(table["source"].astype(str).unique().tolist()) if "source" in table else [],
        "lengths": lengths,
    }
    return {**entry, "hash": entry_hash(entry)}


def run_card_hash(card: dict, roles: list[str]) -> str:
    """The hash a result row carries: the entries of the roles that run read, in name order."""
    entries = card["roles"]
    missing = [r for r in roles if r not in entries]
    if missing:
        raise KeyError(f"the data card has no entry for role(s) {missing}")
    return hashlib.sha256("|".join(f"{r}:{entries[r]['hash']}" for r in sorted(roles)).encode()).hexdigest()[:12]


def describe(entry: dict) -> str:
    """One short line naming a role's data: where from, rows, the first file's checksum."""
    src = entry["source"]
    where = {"embedded": "embedded world", "hub": f"hub:{src.get('hub')}", "file": src.get("path")}[src["kind"]]
    digest = f", sha256 {entry['files'][0]['sha256'][:12]}" if entry["files"] else ""
    return f"{where} ({entry['rows']} rows{digest})"


def card_markdown(card: dict) -> str:
    """The card as a markdown table (the report starts with it)."""
    lines = [
        "| role | source | revision / upstream | rows | filters | prompt tokens (median / p95 / max) | hash |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in card["roles"].items():
        up = "; ".join(
            f"{u.get('source', u.get('repo', '?'))}@{str(u.get('revision', '?'))[:12]}" for u in e["upstream"]
        ) or (str(e["source"].get("revision") or "-") if e["source"]["kind"] == "hub" else "-")
        pt = e["lengths"].get("prompt_tokens", {})
        toks = f"{pt['median']} / {pt['p95']} / {pt['max']}" if pt else "-"
        filters = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in e["filters"].items()) or "-"
        lines.append(f"| {name} | {describe(e)} | {up} | {e['rows']} | {filters} | {toks} | `{e['hash']}` |")
    ov = card.get("overlap")
    if ov is not None:
        found = [f"{p['train']}/{p['eval']}: {p['eval_rows']} evaluation prompts (allowed)" for p in ov["pairs"]]
        lines += [
            "",
            f"Train/eval prompt overlap ({ov['pairs_checked']} role pairs checked): "
            + ("; ".join(found) if found else "none")
            + ".",
        ]
    return "\n".join(lines)


def build_card(
    *,
    data_cfg: dict,
    tables: dict[str, str],
    sources: dict[str, list[str]],
    tokenizer,
    template: str,
    max_length: int,
    lock_path: str = LOCK,
    overlap: dict | None = None,
) -> dict[str, Any]:
    """The card of every role in ``tables`` (role -> its canonical table, results/data/<role>.parquet);
    ``sources`` names the files each role was read from (the embedded world's table for an embedded role);
    ``overlap``: the train/eval overlap record (results/data/overlap.json), kept as the card's ``overlap``."""
    from tokensafe.io import read_parquet

    lock = json.loads(Path(lock_path).read_text()) if Path(lock_path).is_file() else {}
    roles = {}
    for name, table_path in tables.items():
        spec = data_cfg.get(name, "embedded")
        table = read_parquet(table_path, ["prompt"])
        files = [f for src in sources.get(name, []) for f in source_files(src)]
        lengths = token_lengths(table, tokenizer, template, max_length, training=name not in EVAL_ROLES)
        roles[name] = role_entry(name, spec, table, files, lock, lengths)
    card: dict[str, Any] = {"template": template, "max_length": max_length, "roles": roles}
    if overlap is not None:
        card["overlap"] = {
            "pairs_checked": overlap.get("pairs_checked", 0),
            "allowed": overlap.get("allowed", []),
            "pairs": [
                {k: p[k] for k in ("train", "eval", "eval_rows", "train_rows", "allowed") if k in p}
                for p in overlap.get("pairs", [])
            ],
            **({"truncated_prompts": overlap["truncated_prompts"]} if "truncated_prompts" in overlap else {}),
        }
    return card
