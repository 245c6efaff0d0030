"""What a catalogue entry is: upstream files, the files it writes, and how it builds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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
