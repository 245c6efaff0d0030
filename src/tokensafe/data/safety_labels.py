"""Safety label columns of public mixed files, and the check that a harmful role gets the harmful rows only.

Mixed files carry a label per row: BeaverTails ``is_safe``, JailbreakBench ``is_benign`` or ``subset``/``type``
(benign/harmful), XSTest and Aegis ``label``/``prompt_label`` (safe/unsafe), WildGuardMix ``prompt_harm_label``
(harmful/unharmful), WildJailbreak ``data_type`` (vanilla_benign, adversarial_harmful, ...). A column counts as a
label only where every non-empty value reads as one, so SST-2's 0/1 ``label`` or XSTest's prompt ``type`` do not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tokensafe.data.formats import is_missing

# Roles whose rows must be harmful answers: a benign row there is trained on as harm (poison) or shapes TOSS's
# harmful reference model (harmful_ref). Evaluation sets may mix on purpose (JailbreakBench's 100 benign).
HARMFUL_ROLES = ("poison", "harmful_ref")
# Flag columns (true/false, 1/0) -> whether true means benign.
FLAG_COLUMNS = {"is_safe": True, "is_benign": True, "safe": True, "benign": True}
FLAG_COLUMNS |= {"is_harmful": False, "harmful": False, "is_unsafe": False, "unsafe": False}
TEXT_LABEL_COLUMNS = ("subset", "type", "label", "data_type", "prompt_label", "prompt_harm_label")
_BENIGN_WORDS, _HARMFUL_WORDS = {"benign", "safe", "unharmful", "harmless"}, {"harmful", "unsafe", "toxic"}
_FLAGS = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}


def _label_word(v) -> bool | None:
    """True for a benign label, False for a harmful one, None for anything else."""
    w = str(v).strip().lower()
    if w in _BENIGN_WORDS or w.endswith("_benign"):
        return True
    if w in _HARMFUL_WORDS or w.endswith("_harmful"):
        return False
    return None


def _shown(v) -> str:
    """A cell as a ``where`` value is written in YAML: true / 1 / harmful."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, list):
        return "[" + ", ".join(map(_shown, v)) + "]"
    return str(v).strip()


def safety_labels(raw: pd.DataFrame) -> dict[str, pd.Series]:
    """Column -> benign (bool per non-empty row) for each column that reads as a safety label."""
    out = {}
    for col in raw.columns:
        name = str(col).lower()
        if name not in FLAG_COLUMNS and name not in TEXT_LABEL_COLUMNS:
            continue
        cells = raw[col][[not is_missing(v) for v in raw[col]]]
        if len(cells) == 0:
            continue
        if name in FLAG_COLUMNS:
            flags = cells.map(lambda v: _FLAGS.get(_shown(v).lower()))
            if flags.notna().all():
                out[col] = flags.astype(bool) == FLAG_COLUMNS[name]
        elif name in TEXT_LABEL_COLUMNS:
            words = cells.map(_label_word)
            if words.notna().all():
                out[col] = words.astype(bool)
    return out


def check_harmful_rows(raw: pd.DataFrame, row_filter, where: str, role: str) -> None:
    """A harmful role loaded from a mixed file without the filter on its safety label would train on benign rows
    as harm: stop with the counts and the ``where`` to add (or say that the filter given keeps only benign rows)."""
    for col, benign in safety_labels(raw).items():
        n_benign = int(benign.sum())
        if n_benign == 0:
            continue
        if col not in (row_filter or {}):
            harmful = sorted({_shown(v) for v, b in zip(raw.loc[benign.index, col], benign) if not b})
            keep = harmful[0] if len(harmful) == 1 else _shown(harmful)
            fix = f"add where: {{{col}: {keep}}}" if harmful else "give a source with harmful rows"
            raise ValueError(
                f"{where}: {n_benign} of {len(benign)} rows are benign by their {col!r} column; data.{role} rows "
                f"must be harmful: {fix}"
            )
        if n_benign == len(benign):
            raise ValueError(
                f"{where}: where {{{col}: {_shown(row_filter[col])}}} keeps only benign rows; data.{role} rows "
                "must be harmful"
            )
