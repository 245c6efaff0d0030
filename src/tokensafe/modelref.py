"""What a model reference in the config is: the embedded world's model, a local folder or a hub id.

The one classifier: config validation calls it before any job is planned, and every loader calls it
again before it loads (a folder deleted since planning fails there with the same message). Relative
paths are read from the run directory (the current directory of the run: Snakemake's ``--directory``).

``owner/name`` is both a hub id and a relative path. A reference that exists is a local folder; one that
does not is a hub id only where it cannot be meant as a path (see :func:`_local_reason`). ``hub:owner/name``
marks a hub id outright; the loaders strip the marker (:func:`load_name`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

HUB_PREFIX = "hub:"
# Page paths of the Hugging Face Hub (huggingface.co/models, /datasets, /spaces), never an owner's name.
_HUB_PAGES = ("models", "datasets", "spaces")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def is_embedded(ref: Any) -> bool:
    return ref == "embedded"


def classify_model_ref(ref: str) -> str:
    """'embedded', 'local' (an existing folder) or 'hub' (an org/name id, or one marked ``hub:``).

    A missing path, or an id that reads as one, raises FileNotFoundError naming it and the way to mark a
    hub id; a malformed ``hub:`` id raises ValueError.
    """
    if is_embedded(ref):
        return "embedded"
    if ref.startswith(HUB_PREFIX):
        name = ref[len(HUB_PREFIX) :]
        if not _HUB_ID.fullmatch(name) or ".." in name:
            raise ValueError(f"model {ref!r}: after 'hub:' expected a hub id 'org/name', found {name!r}")
        return "hub"
    if Path(ref).exists():
        return "local"
    reason = _local_reason(ref)
    if reason:
        where = "" if Path(ref).is_absolute() else f" in the run directory {Path.cwd()}"
        raise FileNotFoundError(
            f"model path {ref!r} does not exist{where} ({reason}); give an existing folder, 'embedded', "
            f"or a hub id: 'org/name', marked 'hub:org/name' where it could be read as a path"
        )
    return "hub"


def _local_reason(ref: str) -> str | None:
    """Why a missing ``ref`` is taken for a local path rather than a hub id (None: it reads as a hub id)."""
    parts = ref.split("/")
    if ref.startswith("~"):
        return "'~' is not expanded: give the full path"
    if ref.startswith((".", "/")) or "\\" in ref:
        return "it reads as a path"
    if len(parts) != 2 or not all(parts):
        return "a hub id is 'org/name'"
    if Path(parts[0]).is_dir():
        return f"'{parts[0]}/' is a folder here"
    if parts[0] in _HUB_PAGES:
        return f"'{parts[0]}' is no hub owner"
    return None


def load_name(ref: str) -> str:
    """What ``from_pretrained`` (or vLLM) is given for ``ref``: checked by :func:`classify_model_ref`, then
    without its ``hub:`` marker."""
    classify_model_ref(ref)
    return ref[len(HUB_PREFIX) :] if ref.startswith(HUB_PREFIX) else ref
