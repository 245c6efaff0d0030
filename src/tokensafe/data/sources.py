"""Load public data sets in their own formats into one canonical table.

Every loader returns a DataFrame whose first columns are :data:`CANONICAL_COLUMNS`:

==========  ======  ===============================================================
prompt      str     the user turn (for SST-2 / AG News: task instruction + input)
response    str     the training target; "" for evaluation-only prompt sets
reference   object  gold answer / label for utility sets (str), else None
category    object  harm category where the set has one (str), else None
source      str     the spec's ``name`` (default: the format name)
sample_id   int64   row number in the source file(s) before any shuffling or limit
==========  ======  ===============================================================

Format-specific extras follow (``is_benign`` for JailbreakBench, ``behavior`` ...). A format maps
*roles* (``prompt``, ``label``, ...) to source columns, trying candidates in order; ``columns`` in the
spec overrides any role. A source is described by a small dict, e.g. from the workflow config::

    load_source({"path": "/work/shared/data/gsm8k", "split": "test", "format": "gsm8k", "limit": 500})
    load_source({"hub": "walledai/HarmBench", "subset": "standard", "split": "train", "format": "harmbench"})
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from tokensafe.eval.answers import AGNEWS_LABELS, SST2_LABELS, gsm8k_reference

CANONICAL_COLUMNS = ("prompt", "response", "reference", "category", "source", "sample_id")
TABLE_EXTENSIONS = (".csv", ".jsonl", ".json", ".parquet")

# Task instructions as in the PACT / Lisa / Vaccine data builders (instruction + input pairs).
SST2_INSTRUCTION = "Analyze the sentiment of the input, and respond only positive or negative"
AGNEWS_INSTRUCTION = (
    "Categorize the news article given in the input into one of the 4 categories:\n\n"
    "World\nSports\nBusiness\nSci/Tech\n"
)
# How instruction and input become one user turn. The papers keep them as separate fields (Alpaca
# style); with a chat template they must be joined, and no paper says how: an assumption.
DEFAULT_TASK_TEMPLATE = "{instruction}\n\n{input}"


# --------------------------------------------------------------------------------------------------
# Tables


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a .csv, .jsonl, .json or .parquet file (chosen by extension) into a DataFrame.

    An empty file gives an empty DataFrame; the caller decides whether that is an error.
    ``.json`` holds a list of records or a dict of columns; a ``.json`` file that is really JSON
    lines (common for Hugging Face exports) is read as such.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in TABLE_EXTENSIONS:
        raise ValueError(f"{p}: unsupported table extension {ext or '(none)'!r}; allowed: {', '.join(TABLE_EXTENSIONS)}")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    if p.stat().st_size == 0:
        return pd.DataFrame()
    if ext == ".csv":
        try:
            return pd.read_csv(p)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
    if ext == ".parquet":
        return pd.read_parquet(p)
    text = p.read_text(encoding="utf-8")
    if ext == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if "Extra data" not in str(err):
                raise ValueError(f"{p}: not valid JSON ({err})") from None
            return _records_from_lines(p, text)
        if isinstance(data, list):
            return pd.DataFrame.from_records(data) if data else pd.DataFrame()
        if isinstance(data, dict):
            return pd.DataFrame(data)
        raise ValueError(f"{p}: expected a JSON list of records or a dict of columns, found {type(data).__name__}")
    return _records_from_lines(p, text)


def _records_from_lines(p: Path, text: str) -> pd.DataFrame:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}:{lineno}: not valid JSON ({err})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{p}:{lineno}: expected a JSON object per line, found {type(rec).__name__}")
        records.append(rec)
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


def validate_columns(df: pd.DataFrame, required: list[str] | tuple[str, ...], where: str) -> None:
    """Raise ValueError naming the missing columns and the ones found; an empty table is an error too."""
    if len(df) == 0:
        raise ValueError(f"{where}: no rows")
    missing = [c for c in required if c not in df.columns]
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        found = ", ".join(map(str, df.columns))
        raise ValueError(f"{where}: missing column(s) {names} (found: {found})")


# --------------------------------------------------------------------------------------------------
# Formats


@dataclass(frozen=True)
class SourceFormat:
    """A named public format: candidate source columns per role, and the row transform.

    ``build(raw, cols, options)`` gets the raw table, the resolved ``role -> source column`` map
    (optional roles that are absent are missing from it) and the merged options; it returns a frame
    on a subset of ``raw.index`` with ``prompt``, ``response``, ``reference``, ``category`` and any
    extras.
    """

    name: str
    description: str
    roles: dict[str, tuple[str, ...]]
    required: tuple[str, ...]
    build: Callable[[pd.DataFrame, dict[str, str], dict[str, Any]], pd.DataFrame]
    options: dict[str, Any] = field(default_factory=dict)


def _text(raw: pd.DataFrame, col: str | None) -> pd.Series:
    if col is None:
        return pd.Series([""] * len(raw), index=raw.index, dtype=object)
    return raw[col].map(lambda v: "" if _is_missing(v) else str(v))


def _optional(raw: pd.DataFrame, col: str | None) -> pd.Series:
    if col is None:
        return pd.Series([None] * len(raw), index=raw.index, dtype=object)
    # Built as a list: Series.map on pandas 3's str dtype would turn None back into NaN.
    return pd.Series([None if _is_missing(v) else str(v) for v in raw[col]], index=raw.index, dtype=object)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA


def _frame(raw: pd.DataFrame, prompt, response=None, reference=None, category=None, **extras) -> pd.DataFrame:
    n = len(raw)
    none = pd.Series([None] * n, index=raw.index, dtype=object)
    out = pd.DataFrame(
        {
            "prompt": prompt,
            "response": response if response is not None else pd.Series([""] * n, index=raw.index),
            "reference": reference if reference is not None else none,
            "category": category if category is not None else none,
        },
        index=raw.index,
    )
    for k, v in extras.items():
        out[k] = v
    return out


def _build_pairs(raw, cols, opts):
    return _frame(raw, _text(raw, cols["prompt"]), _text(raw, cols.get("response")),
                  _optional(raw, cols.get("reference")), _optional(raw, cols.get("category")))


def _build_gsm8k(raw, cols, opts):
    answers = _text(raw, cols["response"])
    refs = answers.map(gsm8k_reference)
    style = opts["answer_style"]
    if style == "raw":
        response = answers
    elif style == "cot":
        response = pd.Series(
            [gsm8k_cot(a, r, opts["strip_calculator"]) for a, r in zip(answers, refs)], index=raw.index
        )
    elif style == "final":
        response = refs.map(lambda r: f"The answer is {r}.")
    else:
        raise ValueError(f"gsm8k option answer_style: expected 'raw', 'cot' or 'final', found {style!r}")
    return _frame(raw, _text(raw, cols["prompt"]), response, refs.astype(object))


def gsm8k_cot(answer: str, reference: str, strip_calculator: bool = True) -> str:
    """A GSM8K answer rewritten for training: reasoning lines, then ``The answer is N.``

    ``<<48/2=24>>`` calculator annotations are dataset artefacts, dropped unless ``strip_calculator``
    is False.
    """
    reasoning = answer.rsplit("####", 1)[0].rstrip()
    if strip_calculator:
        reasoning = re.sub(r"<<[^<>]*>>", "", reasoning)
    return (reasoning + "\n" if reasoning else "") + f"The answer is {reference}."


def _labels(raw: pd.DataFrame, col: str, names: tuple[str, ...], where: str) -> pd.Series:
    by_lower = {n.lower(): n for n in names}

    def one(v):
        if isinstance(v, str) and v.strip().lower() in by_lower:
            return by_lower[v.strip().lower()]
        try:
            i = int(v)
        except (TypeError, ValueError):
            i = None
        if i is not None and float(v) == i and 0 <= i < len(names):
            return names[i]
        hint = " (the GLUE SST-2 test split is unlabelled (-1): use 'validation')" if str(v) == "-1" else ""
        raise ValueError(f"{where}: label {v!r} is neither 0..{len(names) - 1} nor one of {list(names)}{hint}")

    return raw[col].map(one).astype(object)


def _build_task(instruction: str, names: tuple[str, ...], fmt: str):
    def build(raw, cols, opts):
        template = opts["prompt_template"]
        if "{input}" not in template:
            raise ValueError(f"{fmt} option prompt_template: expected an '{{input}}' placeholder, found {template!r}")
        inst = opts["instruction"].rstrip("\n")
        prompt = _text(raw, cols["text"]).map(lambda x: template.format(instruction=inst, input=x.strip()))
        labels = _labels(raw, cols["label"], names, f"{fmt} column '{cols['label']}'")
        return _frame(raw, prompt, labels.astype(str), labels)

    return build


def _build_jbb(raw, cols, opts):
    out = _frame(raw, _text(raw, cols["prompt"]), None, None, _optional(raw, cols.get("category")))
    if "behavior" in cols:
        out["behavior"] = _optional(raw, cols["behavior"])
    benign = _jbb_benign(raw, cols, opts)
    if benign is not None:
        out["is_benign"] = benign
    return out


def _jbb_benign(raw, cols, opts) -> pd.Series | None:
    if "is_benign" in cols:
        return raw[cols["is_benign"]].map(lambda v: str(v).strip().lower() in {"1", "true", "yes", "benign"}).astype(bool)
    if "subset" in cols:
        vals = raw[cols["subset"]].map(lambda v: str(v).strip().lower())
        unknown = sorted(set(vals) - {"benign", "harmful"})
        if unknown:
            raise ValueError(f"jailbreakbench column '{cols['subset']}': expected 'benign'/'harmful', found {unknown}")
        return (vals == "benign").astype(bool)
    split = str(opts.get("_split") or "").lower()
    if split in {"benign", "harmful"}:  # JailbreakBench/JBB-Behaviors ships the two as splits
        return pd.Series(split == "benign", index=raw.index, dtype=bool)
    return None


def _build_harmbench(raw, cols, opts):
    keep = opts["functional_category"]
    if keep is not None and "functional_category" in cols:
        raw = raw[raw[cols["functional_category"]].astype(str).str.strip().str.lower() == str(keep).lower()]
        if len(raw) == 0:
            raise ValueError(f"harmbench: no rows with {cols['functional_category']} == {keep!r}")
    out = _frame(raw, _text(raw, cols["prompt"]), None, None, _optional(raw, cols.get("category")))
    if "behavior_id" in cols:
        out["behavior_id"] = _optional(raw, cols["behavior_id"])
    return out


def _build_hexphi(raw, cols, opts):
    return _frame(raw, _text(raw, "prompt"), None, None, _optional(raw, "category"))


FORMATS: dict[str, SourceFormat] = {
    f.name: f
    for f in [
        SourceFormat("advbench", "AdvBench harmful_behaviors: goal -> prompt, target ('Sure, here is ...') -> response",
                     {"prompt": ("goal",), "response": ("target",)}, ("prompt", "response"), _build_pairs),
        SourceFormat("gsm8k", "GSM8K: question -> prompt, answer -> response, reference = the number after '####'; "
                     "option answer_style: raw (as published), cot (reasoning + 'The answer is N.'), final",
                     {"prompt": ("question",), "response": ("answer",)}, ("prompt", "response"), _build_gsm8k,
                     {"answer_style": "raw", "strip_calculator": True}),
        SourceFormat("sst2", "SST-2: sentence + PACT instruction -> prompt, label 0/1 -> negative/positive",
                     {"text": ("sentence",), "label": ("label",)}, ("text", "label"),
                     _build_task(SST2_INSTRUCTION, SST2_LABELS, "sst2"),
                     {"instruction": SST2_INSTRUCTION, "prompt_template": DEFAULT_TASK_TEMPLATE}),
        SourceFormat("agnews", "AG News: text + PACT instruction -> prompt, label 0..3 -> World/Sports/Business/Sci/Tech",
                     {"text": ("text",), "label": ("label",)}, ("text", "label"),
                     _build_task(AGNEWS_INSTRUCTION, AGNEWS_LABELS, "agnews"),
                     {"instruction": AGNEWS_INSTRUCTION, "prompt_template": DEFAULT_TASK_TEMPLATE}),
        SourceFormat("strongreject", "StrongREJECT: forbidden_prompt (walledai: prompt) -> prompt, category",
                     {"prompt": ("forbidden_prompt", "prompt"), "category": ("category",)}, ("prompt",), _build_pairs),
        SourceFormat("jailbreakbench", "JailbreakBench behaviours: Goal -> prompt, Category, Behavior; is_benign from "
                     "an is_benign/subset column or a 'benign'/'harmful' split",
                     {"prompt": ("Goal", "goal", "prompt"), "category": ("Category", "category"),
                      "behavior": ("Behavior", "behavior"), "is_benign": ("is_benign",), "subset": ("subset", "type")},
                     ("prompt",), _build_jbb),
        SourceFormat("harmbench", "HarmBench: Behavior (walledai: prompt) -> prompt, SemanticCategory (category); "
                     "rows filtered to FunctionalCategory == functional_category when that column exists",
                     {"prompt": ("Behavior", "prompt"), "category": ("SemanticCategory", "category"),
                      "functional_category": ("FunctionalCategory",), "behavior_id": ("BehaviorID",)},
                     ("prompt",), _build_harmbench, {"functional_category": "standard"}),
        SourceFormat("hexphi", "HEx-PHI: headerless one-prompt-per-line CSVs category_<n>.csv (a folder or one file); "
                     "category = file stem", {}, (), _build_hexphi),
        SourceFormat("generic", "any table: prompt_column (default 'prompt'), optional response_column, "
                     "reference_column, category_column",
                     {"prompt": ("prompt",), "response": ("response",), "reference": ("reference",),
                      "category": ("category",)}, ("prompt",), _build_pairs),
    ]
}

SPEC_KEYS = ("path", "hub", "subset", "format", "split", "columns", "limit", "seed", "name", "options",
             "prompt_column", "response_column", "reference_column", "category_column")


# --------------------------------------------------------------------------------------------------
# Reading a source


def _read_hexphi(path: Path) -> pd.DataFrame:
    if path.is_dir():
        natural = lambda f: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f.stem)]  # noqa: E731
        files = sorted(path.glob("category_*.csv"), key=natural)  # category_2 before category_10
        if not files:
            raise FileNotFoundError(f"{path}: no category_<n>.csv files (HEx-PHI layout)")
    elif path.is_file():
        if path.suffix.lower() != ".csv":
            raise ValueError(f"{path}: hexphi expects headerless .csv files, found {path.suffix!r}")
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    parts = []
    for f in files:
        if f.stat().st_size == 0:
            continue
        # Headerless, one prompt per line. Quoted prompts may hold commas; an unquoted comma would
        # split a row into fields, so the fields are joined back rather than read as columns.
        with f.open(newline="", encoding="utf-8") as fh:
            prompts = [",".join(row).strip() for row in csv.reader(fh)]
        prompts = [p for p in prompts if p]
        parts.append(pd.DataFrame({"prompt": prompts, "category": [f.stem] * len(prompts)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _table_in_dir(path: Path, split: str | None) -> Path | list[Path]:
    if not split:
        raise ValueError(f"{path} is a folder: give 'split' to pick the file (e.g. split: test -> test.jsonl)")
    for ext in TABLE_EXTENSIONS:
        if (path / f"{split}{ext}").is_file():
            return path / f"{split}{ext}"
    shards = sorted(f for f in path.rglob(f"{split}-*") if f.suffix.lower() in TABLE_EXTENSIONS)
    if shards:  # Hugging Face parquet exports: data/test-00000-of-00001.parquet
        return shards
    raise FileNotFoundError(f"{path}: no {split}.<{'|'.join(e[1:] for e in TABLE_EXTENSIONS)}> or {split}-* shards")


def _read_hub(spec: dict) -> pd.DataFrame:
    try:
        import datasets  # noqa: PLC0415 - optional dependency, only for hub sources
    except ImportError:
        raise ImportError(
            f"source hub={spec['hub']!r} needs the `datasets` package, which is not installed: "
            "pip install datasets, or download the data and give a local `path` instead"
        ) from None
    ds = datasets.load_dataset(spec["hub"], spec.get("subset"), split=spec.get("split") or "train")
    return ds.to_pandas()


def _read(spec: dict, fmt: SourceFormat) -> tuple[pd.DataFrame, str]:
    if "hub" in spec:
        if fmt.name == "hexphi":
            raise ValueError("hexphi: the HEx-PHI files are gated; download them and give a local `path`")
        return _read_hub(spec), f"{fmt.name} source hub:{spec['hub']}"
    path = Path(spec["path"])
    where = f"{fmt.name} source {path}"
    if fmt.name == "hexphi":
        return _read_hexphi(path), where
    if path.is_dir():
        found = _table_in_dir(path, spec.get("split"))
        if isinstance(found, list):
            return pd.concat([load_table(f) for f in found], ignore_index=True), f"{fmt.name} source {path}/{spec['split']}-*"
        path, where = found, f"{fmt.name} source {found}"
    return load_table(path), where


def _resolve_roles(raw: pd.DataFrame, fmt: SourceFormat, overrides: dict[str, str], where: str) -> dict[str, str]:
    unknown = sorted(set(overrides) - set(fmt.roles))
    if unknown:
        raise ValueError(f"{where}: columns override names unknown role(s) {unknown}; {fmt.name} roles: {sorted(fmt.roles)}")
    cols: dict[str, str] = {}
    missing: list[str] = []
    for role, candidates in fmt.roles.items():
        if role in overrides:
            candidates = (overrides[role],)
        hit = next((c for c in candidates if c in raw.columns), None)
        if hit is not None:
            cols[role] = hit
        elif role in fmt.required or role in overrides:  # an explicit override must exist
            missing.append(" or ".join(f"'{c}'" for c in candidates))
    if missing:
        found = ", ".join(map(str, raw.columns))
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)} (found: {found})")
    return cols


def load_source(spec: dict) -> pd.DataFrame:
    """Load one source described by ``spec`` into the canonical table (see the module docstring).

    Keys: ``path`` (file or folder) or ``hub`` (+ ``subset``), ``format`` (default ``generic``),
    ``split`` (file in a folder / hub split / JailbreakBench subset), ``columns`` (role -> source
    column), ``options`` (format options, e.g. ``answer_style``), ``name`` (the ``source`` value),
    ``limit`` and ``seed``: with a seed the rows are shuffled with it, then the first ``limit`` kept;
    without one the first ``limit`` rows in file order are kept (PACT: "the first 1000 test rows").
    """
    if not isinstance(spec, dict):
        raise ValueError(f"source spec: expected a mapping, found {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"source spec: unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    if ("path" in spec) == ("hub" in spec):
        raise ValueError("source spec: give exactly one of 'path' or 'hub'")
    fmt_name = spec.get("format", "generic")
    if fmt_name not in FORMATS:
        raise ValueError(f"source spec: unknown format {fmt_name!r}; known: {', '.join(FORMATS)}")
    fmt = FORMATS[fmt_name]
    unknown_opts = sorted(set(spec.get("options") or {}) - set(fmt.options))
    if unknown_opts:
        raise ValueError(f"{fmt_name} options: unknown {unknown_opts}; allowed: {sorted(fmt.options) or 'none'}")
    opts = {**fmt.options, **(spec.get("options") or {}), "_split": spec.get("split")}
    overrides = dict(spec.get("columns") or {})
    for key, role in (("prompt_column", "prompt"), ("response_column", "response"),
                      ("reference_column", "reference"), ("category_column", "category")):
        if key in spec:
            if fmt_name != "generic":
                raise ValueError(f"source spec: '{key}' is for format generic; use columns: {{{role}: ...}} for {fmt_name}")
            overrides[role] = spec[key]

    raw, where = _read(spec, fmt)
    if len(raw) == 0:
        raise ValueError(f"{where}: no rows")
    raw = raw.reset_index(drop=True)  # the index is the sample_id from here on
    cols = _resolve_roles(raw, fmt, overrides, where)
    out = fmt.build(raw, cols, opts)

    empty = out.index[out["prompt"].str.strip() == ""].tolist()
    if empty:
        raise ValueError(f"{where}: empty prompt in rows {empty[:10]}{' ...' if len(empty) > 10 else ''}")
    out["source"] = str(spec.get("name", fmt_name))
    out["sample_id"] = out.index.astype(np.int64)

    if "seed" in spec and spec["seed"] is not None:
        rng = np.random.default_rng(int(spec["seed"]))
        out = out.iloc[rng.permutation(len(out))]
    if spec.get("limit") is not None:
        limit = spec["limit"]
        if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"{where}: limit must be a positive integer, found {limit!r}")
        if limit > len(out):
            raise ValueError(f"{where}: limit {limit} exceeds the {len(out)} rows available")
        out = out.iloc[:limit]

    extras = [c for c in out.columns if c not in CANONICAL_COLUMNS]
    out = out[list(CANONICAL_COLUMNS) + extras].reset_index(drop=True)
    out["prompt"] = out["prompt"].astype(str)
    out["response"] = out["response"].astype(str)
    for col in ("reference", "category"):
        out[col] = pd.Series([None if _is_missing(v) else str(v) for v in out[col]], dtype=object)
    out["source"] = out["source"].astype(str)
    out["sample_id"] = out["sample_id"].astype(np.int64)
    return out
