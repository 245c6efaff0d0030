"""Checksums and the lock file (data/SOURCES.lock.json): what was fetched, at which revision, with which digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tokensafe.data.fetch.transport import FetchError
from tokensafe.data.fetch.upstream import Entry, Upstream
from tokensafe.io import read_json, sha256_file

LOCK = "data/SOURCES.lock.json"


def digest(path: Path) -> str | None:
    """sha256 of a file; of a folder, over its files' names and digests; None where it does not exist."""
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
        return h.hexdigest()
    return None


def load_lock(dest: Path) -> dict:
    path = dest / LOCK
    if not path.exists():
        return {"version": 1, "files": {}}
    lock = read_json(path)
    if not isinstance(lock, dict) or not isinstance(lock.get("files"), dict):
        raise FetchError(f"{path}: not a lock file (expected {{'version': 1, 'files': {{...}}}}); move it away")
    return lock


def locked_source(lock: dict, up: Upstream) -> dict | None:
    """The lock's record of an upstream file (same kind, repo and path), if any file was built from it."""
    for rec in lock["files"].values():
        for src in rec.get("sources", []):
            if (src.get("kind"), src.get("repo"), src.get("path")) == (up.kind, up.repo, up.path):
                return src
    return None


def wanted_revision(up: Upstream, lock: dict, update: bool) -> str | None:
    """The catalogue's commit; else the locked one (unless ``update``); else None (resolve now)."""
    if up.revision is not None:
        return up.revision
    rec = None if update else locked_source(lock, up)
    return rec.get("revision") if rec else None


def expected_sha256(up: Upstream, revision: str | None, lock: dict) -> str | None:
    if up.sha256 is not None:
        return up.sha256
    rec = locked_source(lock, up)
    if rec and revision is not None and rec.get("revision") == revision:
        return rec.get("sha256")
    return None


def up_to_date(entry: Entry, dest: Path, lock: dict, update: bool) -> bool:
    """Every file of the entry is on disk with its locked sha256, read at the wanted revisions, from the same
    inputs (for derived files)."""
    for f in entry.files:
        rec = lock["files"].get(f)
        if rec is None or not (dest / f).is_file() or sha256_file(dest / f) != rec.get("sha256"):
            return False
        revs = {s["name"]: s.get("revision") for s in rec.get("sources", [])}
        for name, up in entry.sources.items():
            want = wanted_revision(up, lock, update)
            if name not in revs or (want is None and update) or (want is not None and revs[name] != want):
                return False
        for need in entry.needs:
            if (rec.get("inputs") or {}).get(need) != digest(dest / need):
                return False
    return True
