"""The public formats tokensafe reads: per format, the source columns that can fill each role and the row
builder that turns a raw table into canonical rows (:mod:`tokensafe.data.sources`).

:data:`FORMATS` is the one list of format names; the config schema's ``format`` enum is tested against it.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from tokensafe.eval.utility.answers import AGNEWS_LABELS, SST2_LABELS, gsm8k_reference

# Task instructions as in the PACT / Lisa / Vaccine data builders (instruction + input pairs).
SST2_INSTRUCTION = "Analyze the sentiment of the input, and respond only positive or negative"


AGNEWS_INSTRUCTION = (
    "Categorize the news article given in the input into one of the 4 categories:\n\n"
    "World\nSports\nBusiness\nSci/Tech\n"
)


# How instruction and input become one user turn: joined by one space, each kept as published (AG News's
# instruction ends with a newline, GLUE's sentences with a space), as PACT's SST-2 / AG News datasets and
# evaluation scripts do (ft_datasets/*/*_dataset.py, evaluation/utility_evaluation/*: instruction + " " + input).
DEFAULT_TASK_TEMPLATE = "{instruction} {input}"


@dataclass(frozen=True)
class Headerless:
    """A format's published headerless layout: what ``header: none`` without ``names`` means for it."""

    names: tuple[str, ...]  # the columns in file order
    columns: dict[str, str | tuple[str, ...]]  # role -> column(s), as ``columns:`` in a spec
    options: dict[str, Any]  # format options the layout implies (AG News: class index 1-4)
    description: str


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
    headerless: Headerless | None = None


def _text(raw: pd.DataFrame, col: str | None) -> pd.Series:
    if col is None:
        return pd.Series([""] * len(raw), index=raw.index, dtype=object)
    return raw[col].map(lambda v: "" if is_missing(v) else str(v))


def _optional(raw: pd.DataFrame, col: str | None) -> pd.Series:
    if col is None:
        return pd.Series([None] * len(raw), index=raw.index, dtype=object)
    # Built as a list: Series.map on pandas 3's str dtype would turn None back into NaN.
    return pd.Series([_optional_text(v) for v in raw[col]], index=raw.index, dtype=object)


def _optional_text(v: Any) -> str | None:
    if isinstance(v, dict):  # BeaverTails' category: {harm: bool, ...} -> the harms that are true
        return ",".join(str(k) for k, flag in v.items() if flag is True or flag is np.True_) or None
    return None if is_missing(v) else str(v)


def is_missing(v: Any) -> bool:
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
    return _frame(
        raw,
        _text(raw, cols["prompt"]),
        _text(raw, cols.get("response")),
        _optional(raw, cols.get("reference")),
        _optional(raw, cols.get("category")),
    )


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


def _labels(raw: pd.DataFrame, col: str, names: tuple[str, ...], where: str, offset: int = 0) -> pd.Series:
    """Label names from names or class indices; ``offset`` is added to an index first (1-based files: -1)."""
    by_lower = {n.lower(): n for n in names}

    def one(v):
        if isinstance(v, str) and v.strip().lower() in by_lower:
            return by_lower[v.strip().lower()]
        try:
            i = int(v)
        except (TypeError, ValueError):
            i = None
        if i is not None and float(v) == i and 0 <= i + offset < len(names):
            return names[i + offset]
        shifted = f" ({i + offset} after label_offset {offset})" if offset and i is not None else ""
        hint = " (the GLUE SST-2 test split is unlabelled (-1): use 'validation')" if str(v) == "-1" else ""
        raise ValueError(f"{where}: label {v!r}{shifted} is neither 0..{len(names) - 1} nor one of {list(names)}{hint}")

    return raw[col].map(one).astype(object)


def _build_task(instruction: str, names: tuple[str, ...], fmt: str):
    def build(raw, cols, opts):
        template = opts["prompt_template"]
        if "{input}" not in template:
            raise ValueError(f"{fmt} option prompt_template: expected an '{{input}}' placeholder, found {template!r}")
        inst = opts["instruction"]
        prompt = _text(raw, cols["text"]).map(lambda x: template.format(instruction=inst, input=x))
        offset = opts["label_offset"]
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise ValueError(f"{fmt} option label_offset: expected an integer (-1 for classes 1..n), found {offset!r}")
        labels = _labels(raw, cols["label"], names, f"{fmt} column '{cols['label']}'", offset)
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
        return (
            raw[cols["is_benign"]].map(lambda v: str(v).strip().lower() in {"1", "true", "yes", "benign"}).astype(bool)
        )
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
        SourceFormat(
            "advbench",
            "AdvBench harmful_behaviors: goal -> prompt, target ('Sure, here is ...') -> response",
            {"prompt": ("goal",), "response": ("target",)},
            ("prompt", "response"),
            _build_pairs,
        ),
        SourceFormat(
            "gsm8k",
            "GSM8K: question -> prompt, answer -> response, reference = the number after '####'; "
            "option answer_style: raw (as published), cot (reasoning + 'The answer is N.'), final",
            {"prompt": ("question",), "response": ("answer",)},
            ("prompt", "response"),
            _build_gsm8k,
            {"answer_style": "raw", "strip_calculator": True},
        ),
        SourceFormat(
            "sst2",
            "SST-2: sentence + PACT instruction -> prompt, label 0/1 -> negative/positive",
            {"text": ("sentence",), "label": ("label",)},
            ("text", "label"),
            _build_task(SST2_INSTRUCTION, SST2_LABELS, "sst2"),
            {"instruction": SST2_INSTRUCTION, "prompt_template": DEFAULT_TASK_TEMPLATE, "label_offset": 0},
        ),
        SourceFormat(
            "agnews",
            "AG News: text + PACT instruction -> prompt, label 0..3 -> World/Sports/Business/Sci/Tech; "
            "header: none reads the published headerless CSV (class index 1-4, title, description)",
            {"text": ("text",), "label": ("label",)},
            ("text", "label"),
            _build_task(AGNEWS_INSTRUCTION, AGNEWS_LABELS, "agnews"),
            {"instruction": AGNEWS_INSTRUCTION, "prompt_template": DEFAULT_TASK_TEMPLATE, "label_offset": 0},
            # As the Hugging Face ag_news loader reads train.csv / test.csv: label - 1, text = title + " " +
            # description, its backslashes (the corpus's line breaks) kept as published, as that loader and
            # torchtext keep them.
            Headerless(
                ("label", "title", "description"),
                {"text": ("title", "description")},
                {"label_offset": -1},
                "the published AG News CSV: class index 1-4, title, description",
            ),
        ),
        SourceFormat(
            "strongreject",
            "StrongREJECT: forbidden_prompt (walledai: prompt) -> prompt, category",
            {"prompt": ("forbidden_prompt", "prompt"), "category": ("category",)},
            ("prompt",),
            _build_pairs,
        ),
        SourceFormat(
            "jailbreakbench",
            "JailbreakBench behaviours: Goal -> prompt, Category, Behavior; is_benign from "
            "an is_benign/subset column or a 'benign'/'harmful' split",
            {
                "prompt": ("Goal", "goal", "prompt"),
                "category": ("Category", "category"),
                "behavior": ("Behavior", "behavior"),
                "is_benign": ("is_benign",),
                "subset": ("subset", "type"),
            },
            ("prompt",),
            _build_jbb,
        ),
        SourceFormat(
            "harmbench",
            "HarmBench: Behavior (walledai: prompt) -> prompt, SemanticCategory (category); "
            "rows filtered to FunctionalCategory == functional_category when that column exists",
            {
                "prompt": ("Behavior", "prompt"),
                "category": ("SemanticCategory", "category"),
                "functional_category": ("FunctionalCategory",),
                "behavior_id": ("BehaviorID",),
            },
            ("prompt",),
            _build_harmbench,
            {"functional_category": "standard"},
        ),
        SourceFormat(
            "hexphi",
            "HEx-PHI: headerless one-prompt-per-line CSVs category_<n>.csv (a folder or one file); "
            "category = file stem",
            {},
            (),
            _build_hexphi,
        ),
        SourceFormat(
            "generic",
            "any table: prompt_column (default 'prompt'), optional response_column, reference_column, category_column",
            {"prompt": ("prompt",), "response": ("response",), "reference": ("reference",), "category": ("category",)},
            ("prompt",),
            _build_pairs,
        ),
    ]
}


def read_hexphi(path: Path) -> pd.DataFrame:
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
