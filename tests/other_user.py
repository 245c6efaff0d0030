"""Run test code as another local user: the refusal tests of the job server and the shared vLLM engine."""

from __future__ import annotations

import json
import os


def as_nobody(fn) -> dict:
    """``fn()`` (a JSON-able result, or the name of the OSError it raised) in a forked process that has become
    uid/gid 65534 ('nobody')."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                out = {"result": fn(), "pid": os.getpid()}
            except OSError as e:
                out = {"error": type(e).__name__, "pid": os.getpid()}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = json.loads(f.read())
    os.waitpid(pid, 0)
    return out
