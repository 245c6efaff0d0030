"""Answer extraction and utility accuracy (GSM8K numbers, SST-2 / AG News labels).

``extract_number`` follows the GSM8K convention: the number after the last "The answer is" or
"####" marker, else the last number anywhere (lm-eval's "flexible-extract" falls back the same way).
Numbers come back as plain strings without ``$`` or thousands separators; ``accuracy`` compares
numbers numerically, so ``"7.0"`` matches ``"7"``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Sequence

SST2_LABELS: tuple[str, ...] = ("negative", "positive")
AGNEWS_LABELS: tuple[str, ...] = ("World", "Sports", "Business", "Sci/Tech")

# A number: optional sign and "$", digits with optional thousands commas, optional decimals.
_NUMBER = re.compile(r"[-+]?\$?\d(?:[\d,]*\d)?(?:\.\d+)?")
_MARKER = re.compile(r"####|the answer is", re.IGNORECASE)


def _clean_number(token: str) -> str:
    s = token.replace("$", "").replace(",", "")
    return s[1:] if s.startswith("+") else s


def extract_number(text: str | None) -> str | None:
    """The final numeric answer in ``text`` as a clean string, or None when there is no number."""
    if not text:
        return None
    # Latest marker first; a marker followed by no number (e.g. "The answer is unclear") is skipped.
    for marker in reversed(list(_MARKER.finditer(text))):
        found = _NUMBER.search(text, marker.end())
        if found:
            return _clean_number(found.group())
    numbers = _NUMBER.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


def gsm8k_reference(answer_field: str) -> str:
    """The gold final answer of a GSM8K ``answer`` field: the text after the last ``####``."""
    if not isinstance(answer_field, str) or "####" not in answer_field:
        raise ValueError(f"gsm8k answer: expected text ending in '#### <number>', found {str(answer_field)[-80:]!r}")
    final = answer_field.rsplit("####", 1)[1].strip()
    if not final:
        raise ValueError(f"gsm8k answer: nothing after '####' in {answer_field[-80:]!r}")
    return _clean_number(final)


def extract_label(text: str | None, labels: Sequence[str]) -> str | None:
    """The label (as spelled in ``labels``) that occurs first in ``text``, case-insensitive, whole word.

    When two labels start at the same place the longer wins ("Sci/Tech" over a label "Sci").
    """
    if len(labels) == 0:
        raise ValueError("labels: expected at least one label, found none")
    if not text:
        return None
    best: tuple[int, int, str] | None = None
    for label in labels:
        # Word boundary that also works for labels ending in non-word characters ("Sci/Tech").
        m = re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text, re.IGNORECASE)
        if m and (best is None or (m.start(), -len(label)) < (best[0], -best[1])):
            best = (m.start(), len(label), label)
    return best[2] if best else None


def _as_decimal(s: str) -> Decimal | None:
    t = s.strip().replace("$", "").replace(",", "").rstrip(".")
    if not _NUMBER.fullmatch(t):
        return None
    try:
        return Decimal(t)
    except InvalidOperation:
        return None


def _normalise_text(s: str) -> str:
    return " ".join(s.strip().rstrip(".").split()).casefold()


# The label metrics (data.task_metric) and the labels their answers are read as.
TASK_LABELS: dict[str, tuple[str, ...]] = {"sst2": SST2_LABELS, "agnews": AGNEWS_LABELS}


def can_match(reference: str, metric: str) -> bool:
    """Whether an answer read by ``metric`` (``number``, or a label of :data:`TASK_LABELS`) can ever match
    ``reference`` under :func:`answers_match`: a number for ``number``, one of the metric's labels otherwise."""
    if metric == "number":
        return _as_decimal(str(reference)) is not None
    return _normalise_text(str(reference)) in {_normalise_text(label) for label in TASK_LABELS[metric]}


def answers_match(pred: str | None, ref: str) -> bool:
    """Exact match after normalisation (case, surrounding space, a final '.'); numbers numerically."""
    if pred is None:
        return False
    p_num, r_num = _as_decimal(str(pred)), _as_decimal(str(ref))
    if p_num is not None and r_num is not None:
        return p_num == r_num
    return _normalise_text(str(pred)) == _normalise_text(str(ref))


def accuracy(preds: Sequence[str | None], refs: Sequence[str]) -> float:
    """Share of predictions matching their reference (a None prediction is wrong)."""
    if len(preds) != len(refs):
        raise ValueError(f"accuracy: {len(preds)} predictions but {len(refs)} references")
    if len(refs) == 0:
        raise ValueError("accuracy: expected at least one reference, found none")
    missing = [i for i, r in enumerate(refs) if r is None]
    if missing:
        raise ValueError(f"accuracy: references missing at positions {missing[:10]}")
    return sum(answers_match(p, r) for p, r in zip(preds, refs)) / len(refs)
