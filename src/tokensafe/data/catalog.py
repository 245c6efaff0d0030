"""Where every data file a preset reads comes from, and how it is made (``python -m tokensafe.data.fetch``).

An :class:`Entry` writes one or more files under the run directory (the paths a preset's ``data.<role>.path``
names) from upstream files (:class:`Upstream`: a GitHub file at a commit, or a Hugging Face hub data-set file at
a revision). Its ``build`` turns the downloaded upstream files (and, for derived files, other entries' written
files, ``needs``) into the bytes to write; ``preparation`` says in words what it did, for the lock file.

Revisions: every GitHub source below is pinned to a commit. A hub source is pinned where its commit could be
checked against public material (the ``pinned_by`` note says how); where ``revision`` is None, the first fetch
records the commit the hub serves in data/SOURCES.lock.json and later fetches read that commit (``--update``
moves it). ``sha256`` is the upstream file's digest where it is known in advance; otherwise the first fetch
records it and a later fetch at the same commit must match it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import lzma
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

# Seeded samples and splits (SlimOrca pool / D^u / eval, D^h) are drawn with this seed.
DATA_SEED = 0


@dataclass(frozen=True)
class Upstream:
    """One upstream file. ``kind`` github: ``repo`` owner/name, read at ``revision`` (a commit); hub: a Hugging Face
    data set ``repo`` read through huggingface_hub."""

    kind: str  # "github" | "hub"
    repo: str
    path: str
    revision: str | None  # commit SHA; None: resolved at the first fetch, then read from the lock
    license: str
    sha256: str | None = None  # the upstream file's sha256 where known in advance
    gated: bool = False  # the hub asks the user to accept terms (and a token) before serving it
    pinned_by: str = ""  # how the revision (and sha256) were checked
    ref: str = "main"  # the branch resolved when revision is None

    @property
    def page(self) -> str:
        if self.kind == "hub":
            return f"https://huggingface.co/datasets/{self.repo}"
        return f"https://github.com/{self.repo}"

    def describe(self) -> str:
        where = "hub dataset" if self.kind == "hub" else "GitHub"
        return f"{where} {self.repo}:{self.path}"


@dataclass(frozen=True)
class Output:
    """A file to write: its path relative to the run directory, its bytes and its row count."""

    path: str
    data: bytes
    rows: int


@dataclass(frozen=True)
class Entry:
    """Files written together from the same upstream files.

    ``build(sources, needs, params)`` gets each upstream name's downloaded file, each needed entry path's local
    file (None where that entry could not be written, e.g. gated), and ``params``; it returns the outputs and a
    dict of details recorded in the lock (counts excluded, ...).
    """

    name: str
    files: tuple[str, ...]
    sources: dict[str, Upstream]
    build: Callable[[dict[str, Path], dict[str, Path | None], dict[str, Any]], tuple[list[Output], dict[str, Any]]]
    preparation: str
    needs: tuple[str, ...] = ()  # other entries' files read by build (derived files)
    optional_needs: tuple[str, ...] = ()  # needs that may be missing (gated): build then does without them
    params: dict[str, Any] = field(default_factory=dict)

    def produces(self, path: str) -> bool:
        """True when ``path`` (a preset's data path) is one of the files, or the folder holding them."""
        p = path.rstrip("/")
        return p in self.files or any(f.startswith(p + "/") for f in self.files)


# --------------------------------------------------------------------------------------------------
# Row counts and builders


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
    """The form prompts are compared in: lowercase, whitespace collapsed, punctuation stripped at both ends."""
    collapsed = " ".join(str(text).lower().split())
    return re.sub(r"^[\W_]+|[\W_]+$", "", collapsed)


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


# --------------------------------------------------------------------------------------------------
# The catalogue

GSM8K_COMMIT = "3101c7d5072418e28b9008a6636bde82a006892c"
ADVBENCH_COMMIT = "098262edf85f807224e70ecd87b9d83716bf6b73"  # upstream main; the file last changed in a62d1307
PACT_COMMIT = "530c1c13958946424722927dfe514c8179aadd18"
SAFETY_LLAMAS_COMMIT = "3ce5779d564ec1f3d87b0bef87261328c8abbd25"

HEXPHI_CATEGORIES = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11)  # category_2.csv is withheld upstream (300 public prompts)


def _gsm8k(split: str, sha: str) -> Upstream:
    return Upstream(
        "github",
        "openai/grade-school-math",
        f"grade_school_math/data/{split}.jsonl",
        GSM8K_COMMIT,
        "MIT",
        sha,
        pinned_by="commit and sha256 of the published file",
    )


def _entries() -> list[Entry]:
    hexphi = {
        f"category_{i}": Upstream(
            "hub",
            "LLM-Tuning-Safety/HEx-PHI",
            f"category_{i}.csv",
            None,
            "HEx-PHI terms of use (accepted on the data set's page)",
            gated=True,
        )
        for i in HEXPHI_CATEGORIES
    }
    return [
        Entry(
            "gsm8k_train",
            ("data/gsm8k/train.jsonl",),
            {"train": _gsm8k("train", "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465")},
            copy_files({"data/gsm8k/train.jsonl": "train"}),
            "copied unchanged",
        ),
        Entry(
            "gsm8k_test",
            ("data/gsm8k/test.jsonl",),
            {"test": _gsm8k("test", "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14")},
            copy_files({"data/gsm8k/test.jsonl": "test"}),
            "copied unchanged",
        ),
        Entry(
            "gsm8k_utility_ref",
            ("data/gsm8k/utility_ref.jsonl",),
            {},
            tail_lines,
            "the last 1,000 lines of data/gsm8k/train.jsonl, byte for byte (the gsm8k TOSS preset's task reads the "
            "first 6,473 rows, so D^u is disjoint from every fine-tuning set)",
            needs=("data/gsm8k/train.jsonl",),
            params={"from": "data/gsm8k/train.jsonl", "n": 1000, "out": "data/gsm8k/utility_ref.jsonl"},
        ),
        Entry(
            "advbench",
            ("data/advbench/harmful_behaviors.csv",),
            {
                "csv": Upstream(
                    "github",
                    "llm-attacks/llm-attacks",
                    "data/advbench/harmful_behaviors.csv",
                    ADVBENCH_COMMIT,
                    "MIT",
                    "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1",
                    pinned_by="main's head commit; the file is unchanged since "
                    "a62d1307e38b3a076e614b20781c785fd860d813",
                )
            },
            copy_files({"data/advbench/harmful_behaviors.csv": "csv"}, header=True),
            "copied unchanged (520 goal/target rows)",
        ),
        Entry(
            "strongreject",
            ("data/strongreject/strongreject_dataset.csv",),
            {
                "csv": Upstream(
                    "github",
                    "alexandrasouly/strongreject",
                    "strongreject_dataset/strongreject_dataset.csv",
                    None,
                    "MIT",
                    pinned_by="no commit verified: main's commit is recorded at the first fetch",
                )
            },
            copy_files({"data/strongreject/strongreject_dataset.csv": "csv"}, header=True),
            "copied unchanged (category, source, forbidden_prompt; 313 rows)",
        ),
        Entry(
            "pact_safe_direction",
            ("data/pact/safe_direction.json",),
            {
                "json": Upstream(
                    "github",
                    "Glresearch1/PACT",
                    "compute_safety_tokens/safe_direction.json",
                    PACT_COMMIT,
                    "none stated in the repository",
                    pinned_by="the commit the file was published at",
                )
            },
            copy_files({"data/pact/safe_direction.json": "json"}),
            "copied unchanged (input, output, guard_decision)",
        ),
        Entry(
            "jailbreakbench",
            ("data/jailbreakbench/jailbreakbench.csv",),
            {
                name: Upstream(
                    "hub",
                    "JailbreakBench/JBB-Behaviors",
                    f"data/{name}-behaviors.csv",
                    "886acc352a31533ffbcf4ef22c744658688086fc",
                    "MIT",
                    pinned_by="revision pinned in public code that reads these files",
                )
                for name in ("harmful", "benign")
            },
            jbb_with_subset,
            "harmful-behaviors.csv then benign-behaviors.csv, their Index column dropped, with a subset column "
            "(harmful / benign)",
            params={"out": "data/jailbreakbench/jailbreakbench.csv"},
        ),
        Entry(
            "harmbench",
            ("data/harmbench/harmbench_behaviors_text_all.csv",),
            {
                "csv": Upstream(
                    "github",
                    "centerforaisafety/HarmBench",
                    "data/behavior_datasets/harmbench_behaviors_text_all.csv",
                    None,
                    "MIT",
                    pinned_by="no commit verified: main's commit is recorded at the first fetch",
                )
            },
            copy_files({"data/harmbench/harmbench_behaviors_text_all.csv": "csv"}, header=True),
            "copied unchanged (the format keeps the FunctionalCategory 'standard' rows)",
        ),
        Entry(
            "sst2",
            tuple(f"data/sst2/{s}-00000-of-00001.parquet" for s in ("train", "validation")),
            {
                s: Upstream(
                    "hub",
                    "nyu-mll/glue",
                    f"sst2/{s}-00000-of-00001.parquet",
                    "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c",
                    "see the GLUE / SST-2 terms",
                    pinned_by="revision pinned in public code that reads these files",
                )
                for s in ("train", "validation")
            },
            copy_files({f"data/sst2/{s}-00000-of-00001.parquet": s for s in ("train", "validation")}),
            "GLUE sst2 parquet shards copied unchanged (the test split is unlabelled and not fetched)",
        ),
        Entry(
            "ag_news",
            tuple(f"data/ag_news/{s}-00000-of-00001.parquet" for s in ("train", "test")),
            {
                s: Upstream(
                    "hub",
                    "fancyzhx/ag_news",
                    f"data/{s}-00000-of-00001.parquet",
                    None,
                    "see the data set's card (AG's corpus: non-commercial use)",
                )
                for s in ("train", "test")
            },
            copy_files({f"data/ag_news/{s}-00000-of-00001.parquet": s for s in ("train", "test")}),
            "parquet shards copied unchanged",
        ),
        Entry(
            "hexphi",
            tuple(f"data/hexphi/category_{i}.csv" for i in HEXPHI_CATEGORIES),
            hexphi,
            copy_files({f"data/hexphi/category_{i}.csv": f"category_{i}" for i in HEXPHI_CATEGORIES}),
            "the 10 public headerless category_<n>.csv files copied unchanged (category_2 is not published)",
        ),
        Entry(
            "safety_demos",
            ("data/safety/safety_only_data_Instructions.json",),
            {
                "json": Upstream(
                    "github",
                    "vinid/safety-tuned-llamas",
                    "data/training/safety_only_data_Instructions.json",
                    SAFETY_LLAMAS_COMMIT,
                    "none stated in the repository",
                    pinned_by="the commit the file was published at",
                )
            },
            copy_files({"data/safety/safety_only_data_Instructions.json": "json"}),
            "copied unchanged (instruction, input, output)",
        ),
        Entry(
            "red_team",
            ("data/toss/red_team.jsonl",),
            {
                "red_team": Upstream(
                    "hub",
                    "Anthropic/hh-rlhf",
                    "red-team-attempts/red_team_attempts.jsonl.gz",
                    "09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa",
                    "MIT",
                    pinned_by="revision pinned in public code that reads this data set",
                )
            },
            red_team_pairs,
            "each transcript's first Human turn -> prompt and the first Assistant turn after it -> response "
            "(stripped); transcripts with an empty turn dropped",
            params={"out": "data/toss/red_team.jsonl", "min_rows": 22400},
        ),
        Entry(
            "slimorca",
            ("data/toss/slimorca_pool.jsonl", "data/toss/slimorca_utility_ref.jsonl", "data/toss/slimorca_eval.jsonl"),
            {
                "slimorca": Upstream(
                    "hub",
                    "Open-Orca/SlimOrca",
                    "oo-labeled_correct.gpt4.sharegpt.jsonl",
                    "ce9ed009ef3292bac33d3520afaf5ec804066120",
                    "MIT",
                    pinned_by="revision pinned in public material that reads this data set",
                )
            },
            split_slimorca,
            "ShareGPT conversations -> prompt = the system message, a blank line, the first human turn (the "
            "system message is omitted where empty), response = the first gpt turn; rows with an empty turn and "
            "rows repeating a normalised human turn dropped; a seeded permutation (seed 0) split into 112,000 pool "
            "rows, 22,400 D^u rows and 500 eval rows (eval: the answer is also the reference)",
            params={
                "seed": DATA_SEED,
                "sizes": {
                    "data/toss/slimorca_pool.jsonl": 112000,
                    "data/toss/slimorca_utility_ref.jsonl": 22400,
                    "data/toss/slimorca_eval.jsonl": 500,
                },
                "reference": "data/toss/slimorca_eval.jsonl",
            },
        ),
        Entry(
            "harmful_ref",
            ("data/toss/harmful_ref.jsonl",),
            {
                "beavertails": Upstream(
                    "hub",
                    "PKU-Alignment/BeaverTails",
                    "round0/330k/train.jsonl.xz",
                    "8401fe609d288129cc684a9b3be6a93e41cfe678",
                    "CC BY-NC 4.0",
                    "12f04c9200000929ebbc616c29cb53331f6df36e7341d73e4a12cffac0eb1c08",
                    pinned_by="revision and sha256 recorded in public material that pins this file",
                )
            },
            beavertails_harmful,
            "330k train rows with is_safe false, minus rows whose normalised prompt (lowercase, whitespace "
            "collapsed, punctuation stripped at the ends) is a red_team.jsonl, AdvBench or HEx-PHI prompt, minus "
            "repeated (prompt, response) pairs; a seeded sample (seed 0) of 22,400 in file order",
            needs=("data/toss/red_team.jsonl", "data/advbench/harmful_behaviors.csv", "data/hexphi"),
            optional_needs=("data/hexphi",),
            params={
                "out": "data/toss/harmful_ref.jsonl",
                "n": 22400,
                "seed": DATA_SEED,
                "exclude": {
                    "data/toss/red_team.jsonl": "generic",
                    "data/advbench/harmful_behaviors.csv": "advbench",
                    "data/hexphi": "hexphi",
                },
            },
        ),
    ]


CATALOG: dict[str, Entry] = {e.name: e for e in _entries()}

# Gated models a preset may name: the page to accept the terms on is https://huggingface.co/<id>.
GATED_MODEL_PREFIXES = ("meta-llama/",)


def entry_for(path: str, catalog: dict[str, Entry]) -> Entry | None:
    return next((e for e in catalog.values() if e.produces(path)), None)
