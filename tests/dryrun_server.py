"""Snakemake dry runs without paying Python's start-up each time (used by workflow_utils.snakemake for ``-n``).

A dry run of this workflow is ~2.5 s of CPU, ~0.9 s of which is importing Snakemake (and pandas, sqlmodel ...
behind it) and ~0.5 s parsing the package for the rules' code versions; the suite makes a few hundred of them
(the rerun matrix alone over 200). This module is a server that does both once and forks one child per dry run
(~0.9 s each); the child does what ``python -m snakemake ARGS`` does in a fresh process (``snakemake.cli.main``
with the same arguments, working directory, environment, standard streams and ``sys.path[0]``), so each dry run
still parses the Snakefile and builds its DAG from scratch, and forgets the parsed modules if any source file
changed since. The parent's imports are shared, which is why ``workflow_utils`` sends a dry run here only when the
test runs it with the environment the server was started with (a test that puts another package first on PYTHONPATH,
or that sets variables for a cluster, gets a fresh process as before).

Protocol (one JSON object per line): the client writes ``{"id", "argv", "cwd", "env", "stdout", "stderr"}`` on
the server's standard input; the server answers ``{"id", "pid"}`` once the child is forked and ``{"id", "rc"}``
when it exits. Standard input closed: the server waits for its children and exits.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _sources() -> dict[str, int]:
    """The package's and the stage scripts' Python files, with their modification times."""
    from tokensafe.rerun import codeversion

    files = [*codeversion._package_dir().rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")]
    return {str(f): f.stat().st_mtime_ns for f in files}


def _warm_code_versions() -> dict[str, int]:
    """Parse the package's modules once for every child (the rules' code versions, tokensafe.rerun.codeversion:
    ~0.4 s of each dry run). Returns the files as they were; a child whose files differ forgets the cache."""
    from tokensafe.rerun import codeversion

    before = _sources()
    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        codeversion.code_version(str(script))
    return before


def _child(req: dict, read: dict[str, int]) -> None:
    code = 1
    try:
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        for fd, path, flags in (
            (0, os.devnull, os.O_RDONLY),
            (1, req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            (2, req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        ):
            new = os.open(path, flags, 0o600)
            os.dup2(new, fd)
            os.close(new)
        if _sources() != read:  # a file changed since the server parsed it: parse again, as a fresh process would
            from tokensafe.rerun import codeversion

            codeversion.clear_caches()
        sys.argv = ["snakemake", *req["argv"]]
        sys.path[0] = os.getcwd()  # what `python -m` puts first

        from snakemake.cli import main

        try:
            main(req["argv"])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # a crash of the child itself (not Snakemake's own error exit): report it like Python
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve() -> None:
    sys.path[0] = os.getcwd()  # not this file's folder: imports resolve as in `python -m snakemake`
    import snakemake.cli  # noqa: F401  the imports every dry run would pay for

    read = _warm_code_versions()

    out = os.fdopen(os.dup(1), "w", buffering=1)
    children: dict[int, str] = {}
    buf = b""
    open_ = True
    while open_ or children:
        if open_:
            ready, _, _ = select.select([0], [], [], 0.02)
            if ready:
                chunk = os.read(0, 65536)
                if not chunk:
                    open_ = False
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    if "kill" in req:
                        try:
                            os.kill(req["kill"], 9)
                        except ProcessLookupError:
                            pass
                        continue
                    pid = os.fork()
                    if pid == 0:
                        _child(req, read)
                    children[pid] = req["id"]
                    out.write(json.dumps({"id": req["id"], "pid": pid}) + "\n")
        else:
            select.select([], [], [], 0.02)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            out.write(json.dumps({"id": children.pop(pid), "rc": os.waitstatus_to_exitcode(status)}) + "\n")


class Client:
    """A server process and the dry runs in flight; thread-safe (the rerun matrix runs two at a time)."""

    def __init__(self, env: dict[str, str]):
        self.env = dict(env)
        self.proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            text=True,
            bufsize=1,
        )
        self.lock = threading.Lock()
        self.pending: dict[str, tuple[Future, Future]] = {}
        self.count = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self.lock:
                pid_f, rc_f = self.pending[msg["id"]]
                if "pid" in msg:
                    pid_f.set_result(msg["pid"])
                else:
                    del self.pending[msg["id"]]
                    rc_f.set_result(msg["rc"])
        with self.lock:  # the server is gone: nothing in flight will finish
            for pid_f, rc_f in self.pending.values():
                for f in (pid_f, rc_f):
                    if not f.done():
                        f.set_exception(RuntimeError("the dry-run server exited"))

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="dryrun") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            with self.lock:
                self.count += 1
                rid = str(self.count)
                pid_f, rc_f = Future(), Future()
                self.pending[rid] = (pid_f, rc_f)
                req = {"id": rid, "argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
                self.proc.stdin.write(json.dumps(req) + "\n")
                self.proc.stdin.flush()
            try:
                rc = rc_f.result(timeout=timeout)
            except TimeoutError:
                with self.lock:
                    self.proc.stdin.write(json.dumps({"kill": pid_f.result()}) + "\n")
                    self.proc.stdin.flush()
                rc_f.result()
                raise subprocess.TimeoutExpired(argv, timeout) from None
            return subprocess.CompletedProcess(argv, rc, out.read_text(), err.read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    serve()
