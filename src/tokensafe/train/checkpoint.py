"""A training job's checkpoint: where it lives, what it was trained from, and its atomic write (docs/checkpoints.md).

A job that writes ``OUT`` keeps its checkpoint in ``OUT.checkpoint/state.pt``, beside the output but not a declared
Snakemake output (Snakemake deletes a failed job's outputs; the checkpoint must outlive the failure). The file holds
the loop's whole state (``tokensafe.train.loop``) and a fingerprint of what the job was trained from: the loop's
settings, the job's settings, the examples, the trainable parameters' names and shapes, the identity (path, size,
mtime) of the job's input files, the package code it runs, the library versions, the CPU numerics and the number
of processes. A rerun resumes from it only when every part matches; otherwise it is discarded with a log line that
names the parts that differ. On success the job removes it (:func:`checkpointed`).

Writes are atomic: a temporary sibling, fsync, ``os.replace``, fsync of the folder; a kill during the write leaves
the previous checkpoint whole (the stray temporary file is removed by the next write).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tokensafe.runtime.launch import is_main_process
from tokensafe.runtime.preemption import CheckpointPolicy, read_policy

FORMAT = 1
STATE_FILE = "state.pt"
SUFFIX = ".checkpoint"


def location(output: str | os.PathLike) -> Path:
    """The checkpoint folder of the job that writes ``output``."""
    out = Path(output)
    return out.with_name(out.name + SUFFIX)


def _write_all(f, data: bytes) -> None:
    """The raw write (a separate function so that a test can kill the process halfway through it)."""
    f.write(data)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never part of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stray in path.parent.glob(f".{path.name}.tmp-*"):  # left by a kill during an earlier write
        stray.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        _write_all(f, data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash of the machine
    finally:
        os.close(dir_fd)


def file_identity(paths: Iterable[str]) -> list[list]:
    """(path, size, mtime_ns) of every file under ``paths`` (folders walked in sorted order); a reference that is
    no local path (a hub id) stands for itself."""
    out: list[list] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file())
        elif path.is_file():
            files = [path]
        else:
            out.append([str(p), None, None])
            continue
        for f in files:
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def examples_digest(examples: list[dict[str, Any]]) -> str:
    """sha256 over every example's arrays (key, dtype, shape, bytes), in order."""
    import numpy as np

    h = hashlib.sha256()
    for ex in examples:
        for key in sorted(ex):
            a = np.ascontiguousarray(np.asarray(ex[key]))
            h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return h.hexdigest()


def code_digest() -> str:
    """sha256 of the source of the package modules this process has imported, the job infrastructure
    (``tokensafe.runtime``) aside: it defines no output, and a job run through the job server imports more of it."""
    h = hashlib.sha256()
    for name in sorted(sys.modules):
        if not (name == "tokensafe" or name.startswith("tokensafe.")) or name.startswith("tokensafe.runtime"):
            continue
        src = getattr(sys.modules[name], "__file__", None)
        if src and src.endswith(".py") and os.path.exists(src):
            h.update(name.encode() + b"\0" + Path(src).read_bytes() + b"\0")
    return h.hexdigest()


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()


@dataclasses.dataclass
class Checkpoints:
    """A training job's checkpoint folder, what identifies the job (its settings and input files) and how often
    it saves (:class:`tokensafe.runtime.preemption.CheckpointPolicy`)."""

    folder: Path
    job: dict[str, Any]
    policy: CheckpointPolicy = dataclasses.field(default_factory=read_policy)

    @property
    def file(self) -> Path:
        return self.folder / STATE_FILE

    def fingerprint(self, **loop: Any) -> dict[str, str]:
        """One digest per part of what the run is trained from: the job's parts and the loop's (``loop``: its
        settings, examples digest, trainable parameters, loss, processes ...)."""
        import accelerate
        import peft
        import torch
        import transformers

        parts = {
            "job settings": _digest(self.job.get("settings")),
            "input files": _digest(file_identity(self.job.get("inputs", []))),
            "code": code_digest(),
            "libraries": _digest(
                [torch.__version__, transformers.__version__, peft.__version__, accelerate.__version__]
            ),
            "cpu numerics": _digest({k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}),
        }
        parts.update({k: v if isinstance(v, str) else _digest(v) for k, v in loop.items()})
        return parts

    def load(self, fingerprint: dict[str, str], log: Callable[[str], None]) -> dict[str, Any] | None:
        """The saved state if it was trained from exactly ``fingerprint``; a stale or unreadable one is removed
        (with a log line naming why) and None returned, as when there is none."""
        import torch

        if not self.file.exists():
            return None
        try:
            state = torch.load(self.file, map_location="cpu", weights_only=True)
            saved = state["fingerprint"]
            if state.get("format") != FORMAT:
                raise ValueError(f"format {state.get('format')}, this code reads {FORMAT}")
        except Exception as e:  # noqa: BLE001 - any unreadable file is discarded, never resumed
            log(f"checkpoint {self.file}: unreadable ({type(e).__name__}: {e}); discarded, training from step 0")
            self.remove()
            return None
        differ = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
        if differ:
            log(
                f"checkpoint {self.file}: trained from other {', '.join(differ)} than this run; discarded, "
                "training from step 0"
            )
            self.remove()
            return None
        return state

    def save(self, state: dict[str, Any], fingerprint: dict[str, str]) -> None:
        import torch

        buf = io.BytesIO()
        torch.save({**state, "format": FORMAT, "fingerprint": fingerprint}, buf)
        atomic_write(self.file, buf.getvalue())

    def remove(self) -> None:
        if is_main_process():
            shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def checkpointed(output: str | os.PathLike, *, settings: Any, inputs: Iterable[str] = ()) -> Iterator[Checkpoints]:
    """The checkpoints of the job that writes ``output`` (trained from ``settings`` and the files ``inputs``), to
    pass to :func:`tokensafe.train.loop.train`; removed when the block (training and writing ``output``) succeeds,
    kept when it fails, for the rerun to resume from."""
    ck = Checkpoints(location(output), {"settings": settings, "inputs": [str(p) for p in inputs]})
    yield ck
    ck.remove()
