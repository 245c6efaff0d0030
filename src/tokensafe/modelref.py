"""What a model reference in the config is: the embedded world's model, a local folder or a hub id.

The one classifier: config validation calls it before any job is planned, and every loader calls it
again before it loads (a folder deleted since planning fails there with the same message).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def is_embedded(ref: Any) -> bool:
    return ref == "embedded"


def classify_model_ref(ref: str) -> str:
    """'embedded', 'local' (an existing folder) or 'hub' (an org/name id).

    Anything else - a path that does not exist, a bare name - raises FileNotFoundError naming it.
    """
    if is_embedded(ref):
        return "embedded"
    if Path(ref).exists():
        return "local"
    parts = ref.split("/")
    looks_like_path = ref.startswith((".", "/", "~")) or len(parts) != 2 or not all(parts)
    if looks_like_path:
        raise FileNotFoundError(
            f"model path {ref!r} does not exist (give an existing folder, a hub id 'org/name' or 'embedded')"
        )
    return "hub"
