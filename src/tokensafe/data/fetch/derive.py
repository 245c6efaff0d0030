"""How the catalogue's files are made from the downloaded upstream files: copies, splits, samples."""

from __future__ import annotations

import csv
import gzip
import io
import json
import lzma
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tokensafe.data.fetch.upstream import Output


def count_rows(path: str, data: bytes) -> int:
    """Rows of a written file, as the workflow would read it: lines of JSON, CSV records, a JSON list, parquet."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return sum(1 for line in data.decode("utf-8").splitlines() if line.strip())
    if suffix == ".json":
        return len(json.loads(data.decode("utf-8")))
    if suffix == ".csv":
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        return len([r for r in rows if any(c.strip() for c in r)])
    if suffix == ".parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415

        return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    raise ValueError(f"{path}: no row count for {suffix!r} files")


def header_rows(path: str, data: bytes) -> int:
    """A CSV with a header row: its data rows."""
    return count_rows(path, data) - 1


def copy_files(mapping: dict[str, str], header: bool = False):
    """A build that writes each upstream file unchanged: ``mapping`` output path -> source name."""

    def build(sources, needs, params):
        outs = []
        for out, name in mapping.items():
            data = sources[name].read_bytes()
            n = count_rows(out, data)
            outs.append(Output(out, data, n - 1 if header and out.endswith(".csv") else n))
        return outs, {}

    return build


def jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def normalise_prompt(text: str) -> str:
    """The form prompts are compared in: the plan's own overlap check's (tokensafe.data.leakage.normalise), so a file
    built disjoint here is disjoint for the check too."""
    from tokensafe.data.leakage import normalise

    return normalise(text)


def tail_lines(sources, needs, params):
    """The last ``n`` lines of a local file, byte for byte (GSM8K's D^u: the rows the task never reads)."""
    src = needs[params["from"]]
    lines = src.read_bytes().splitlines(keepends=True)
    n = params["n"]
    if len(lines) < n:
        raise ValueError(f"{src}: {len(lines)} lines, fewer than the {n} to keep")
    return [Output(params["out"], b"".join(lines[-n:]), n)], {"lines_in_source": len(lines)}


def sharegpt_turns(conversations: list[dict]) -> tuple[str, str, str] | None:
    """(system, human, gpt) of a ShareGPT conversation: the system message ('' if none), the first human turn and
    the first gpt turn after it; None when either turn is missing or empty."""
    system, prompt, response = "", None, None
    for turn in conversations:
        who, text = turn.get("from"), str(turn.get("value") or "")
        if who == "system" and prompt is None:
            system = text.strip()
        elif who == "human" and prompt is None:
            prompt = text
        elif who == "gpt" and prompt is not None:
            response = text
            break
    if not prompt or not prompt.strip() or not response or not response.strip():
        return None
    return system, prompt, response


def sharegpt_pair(conversations: list[dict]) -> tuple[str, str] | None:
    """(prompt, response): the system message, a blank line and the human turn (the bare turn without a system
    message), and the gpt turn."""
    turns = sharegpt_turns(conversations)
    if turns is None:
        return None
    system, prompt, response = turns
    return (f"{system}\n\n{prompt}" if system else prompt), response


def split_slimorca(sources, needs, params):
    """SlimOrca's ShareGPT file -> a pool, D^u and an eval sample, disjoint in their normalised prompts."""
    pairs, seen, dropped_dup, dropped_empty = [], set(), 0, 0
    with sources["slimorca"].open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            convo = json.loads(line)["conversations"]
            turns = sharegpt_turns(convo)
            if turns is None:
                dropped_empty += 1
                continue
            key = normalise_prompt(turns[1])  # the question alone: another system message does not make it new
            if key in seen:  # a repeated question would put it on both sides of a split
                dropped_dup += 1
                continue
            seen.add(key)
            pairs.append(sharegpt_pair(convo))
    sizes = params["sizes"]  # {out path: rows}, drawn in this order
    need = sum(sizes.values())
    if len(pairs) < need:
        raise ValueError(f"SlimOrca: {len(pairs)} usable rows, fewer than the {need} to split")
    order = np.random.default_rng(params["seed"]).permutation(len(pairs))
    outs, start = [], 0
    for out, n in sizes.items():
        rows = [pairs[i] for i in order[start : start + n]]
        start += n
        if params.get("reference") == out:  # the eval file: the answer also as the reference
            recs = [{"prompt": p, "response": r, "reference": r} for p, r in rows]
        else:
            recs = [{"prompt": p, "response": r} for p, r in rows]
        outs.append(Output(out, jsonl_bytes(recs), n))
    details = {"usable_rows": len(pairs), "dropped_repeated_prompt": dropped_dup, "dropped_empty_turn": dropped_empty}
    return outs, details


def read_json_records(path: Path) -> list[dict]:
    """A JSON list, or JSON lines, optionally gzip- or xz-compressed (by suffix)."""
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(stripped)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def first_exchange(transcript: str) -> tuple[str, str]:
    """The first Human turn and the first Assistant turn after it of an hh-rlhf transcript ('' where missing)."""
    parts = re.split(r"(?:^|\n\n)(Human|Assistant):", transcript)
    human = assistant = ""
    for who, text in zip(parts[1::2], parts[2::2]):
        if who == "Human" and not human:
            human = text.strip()
        elif who == "Assistant" and human:
            assistant = text.strip()
            break
    return human, assistant


def red_team_pairs(sources, needs, params):
    """hh-rlhf red-team attempts -> each transcript's first exchange; rows with an empty turn are dropped."""
    recs, dropped = [], 0
    for row in read_json_records(sources["red_team"]):
        prompt, response = first_exchange(str(row.get("transcript") or ""))
        if not prompt or not response:
            dropped += 1
            continue
        recs.append({"prompt": prompt, "response": response})
    if len(recs) < params["min_rows"]:
        raise ValueError(f"red-team attempts: {len(recs)} usable rows, fewer than {params['min_rows']}")
    return [Output(params["out"], jsonl_bytes(recs), len(recs))], {"dropped_empty_turn": dropped}


def local_prompts(path: Path | None, fmt: str) -> list[str]:
    """The prompts of a file another entry wrote (None: not available), read by the workflow's own loader."""
    if path is None:
        return []
    from tokensafe.data.sources import load_source  # noqa: PLC0415 - the workflow's reader, only when needed

    return load_source({"path": str(path), "format": fmt})["prompt"].tolist()


def beavertails_harmful(sources, needs, params):
    """BeaverTails is_safe false rows whose normalised prompts are in none of the poison / evaluation sets."""
    rows = read_json_records(sources["beavertails"])
    excluded_sets = {}
    banned: set[str] = set()
    for path_key, fmt in params["exclude"].items():
        prompts = local_prompts(needs.get(path_key), fmt)
        excluded_sets[path_key] = len(prompts) if needs.get(path_key) is not None else None
        banned |= {normalise_prompt(p) for p in prompts}
    seen, pool = set(), []
    n_unsafe = n_banned = n_dup = 0
    for r in rows:
        if r.get("is_safe") is not False:
            continue
        n_unsafe += 1
        prompt, response = str(r.get("prompt") or ""), str(r.get("response") or "")
        if not prompt.strip() or not response.strip():
            continue
        if normalise_prompt(prompt) in banned:
            n_banned += 1
            continue
        if (prompt, response) in seen:
            n_dup += 1
            continue
        seen.add((prompt, response))
        pool.append({"prompt": prompt, "response": response})
    n = params["n"]
    if len(pool) < n:
        raise ValueError(f"BeaverTails: {len(pool)} eligible unsafe rows, fewer than the {n} to sample")
    pick = np.sort(np.random.default_rng(params["seed"]).choice(len(pool), size=n, replace=False))
    details = {
        "unsafe_rows": n_unsafe,
        "excluded_prompt_in_poison_or_eval": n_banned,
        "dropped_repeated_pair": n_dup,
        "eligible": len(pool),
        "exclusion_sets_rows": excluded_sets,  # null: that set was not available (gated) when this was built
    }
    return [Output(params["out"], jsonl_bytes([pool[i] for i in pick]), n)], details


def jbb_with_subset(sources, needs, params):
    """JBB-Behaviors' harmful and benign CSVs as one table with a ``subset`` column (harmful / benign)."""
    parts = []
    for name in ("harmful", "benign"):
        df = pd.read_csv(sources[name])
        df = df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed") or c == "Index"])
        parts.append(df.assign(subset=name))
    table = pd.concat(parts, ignore_index=True)
    data = table.to_csv(index=False).encode("utf-8")
    return [Output(params["out"], data, len(table))], {}
