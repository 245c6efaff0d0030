"""The local judge server of the LLM-judge jobs (``judge.llm.server``: transformers | vllm): one per local run,
shared by its jobs, or one per job.

Shared (local runs): the workflow's ``onstart`` exports :data:`ENV_DIR` (a fresh private state folder,
:func:`new_state_dir`) and :data:`ENV_OWNER` (the Snakemake process's id). The first LLM-judge job that needs the
server starts it under a lock file, detached, behind a small watcher
(``python -m tokensafe.eval.llm_judge.judge_server``) that stops the server's whole process group when the
Snakemake process is gone (a run killed without its ``onerror`` leaves nothing running); later jobs find its port in
the state file and reuse it. The workflow's ``onsuccess`` / ``onerror`` stop it (:func:`stop_all`). Measured on 2 CPU
cores: ``transformers serve`` is ready in ~9 s and vLLM's API server in ~45 s, against ~0.2 s a short judge answer, so
a server per job would cost more than the judging.

Per job (no :data:`ENV_DIR`, as on SLURM, where jobs do not share a machine): the job starts its own server and
stops it when it is done.

Only the run's own jobs may use a server: it requires the run's key (:mod:`.openai_server`), kept in the
state folder (0700, this user's; a folder that is not is refused before anything is read from it or
started) beside the state files that name the servers' ports, so no other user can read the key or point the
jobs at a port of theirs. A per-job server has a private folder and key of its own.

Which server answers is not an output setting: the cache key is (served model name, messages, parameters).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from tokensafe.eval.llm_judge.openai_server import OpenAIServer, free_port
from tokensafe.runtime.jobsocket import SECRET_NAME, check_private, private_dir

ENV_DIR = "TOKENSAFE_JUDGE_SERVERS"
ENV_OWNER = "TOKENSAFE_JUDGE_OWNER_PID"


def _server(kind: str, model: str, python: str, log_path: str, settings: dict, key_file=None) -> OpenAIServer:
    return OpenAIServer(
        model,
        python=python,
        log_path=log_path,
        kind=kind,
        dtype=settings.get("dtype", "float32"),
        max_model_len=settings.get("max_model_len"),
        kv_cache_gib=settings.get("kv_cache_gib", 1),
        device=settings.get("device", "cpu"),
        key_file=key_file,
    )


def new_state_dir() -> str:
    """A fresh private state folder for a run's shared judge servers, with the run's key in it."""
    return private_dir("judge")


def _state_key(state_dir: str) -> str:
    """The key file of a run's judge servers in ``state_dir`` (both made here if missing); PermissionError when
    the folder is not private to this user."""
    try:
        os.mkdir(state_dir, 0o700)
    except FileExistsError:
        pass
    try:
        check_private(state_dir)
    except PermissionError as e:
        raise PermissionError(f"{ENV_DIR}: {e}; not used (it holds the judge servers' key and ports)") from e
    path = os.path.join(state_dir, SECRET_NAME)
    if not os.path.exists(path):  # written whole, then linked: a concurrent job never reads half a key
        tmp = f"{path}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


@contextlib.contextmanager
def judge_endpoint(kind: str, model: str, python: str, log_path: str, settings: dict):
    """Yield ``(base_url, served_model_name, key_file)`` of a running local server for (kind, model, settings):
    its clients send the key in ``key_file``."""
    state_dir = os.environ.get(ENV_DIR)
    if not state_dir:
        with _server(kind, model, python, log_path, settings) as srv:  # its own private folder and key
            yield srv.base_url, srv.served_model_name, srv.key_file
        return
    key_file = _state_key(state_dir)
    name = hashlib.sha256(json.dumps([kind, os.path.abspath(model), python, settings], sort_keys=True).encode())
    state = Path(state_dir) / f"{name.hexdigest()[:16]}.json"
    with open(str(state) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        srv = _server(kind, model, python, log_path, settings, key_file)
        reuse = False
        if state.exists():
            found = json.loads(state.read_text())
            srv.port = found["port"]
            reuse = _alive(found["pid"]) and srv.ready()  # ours: its port came from our private folder
        if not reuse:
            srv.port = free_port()
            owner = os.environ.get(ENV_OWNER, str(os.getppid()))
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a") as log:
                srv.proc = srv.popen(
                    [sys.executable, "-m", "tokensafe.eval.llm_judge.judge_server", owner, *srv.command()], log
                )
            srv.wait_ready()
            state.write_text(json.dumps({"pid": srv.proc.pid, "port": srv.port, "model": model, "kind": kind}))
    yield srv.base_url, srv.served_model_name, key_file  # the lock is released: jobs share the server


def stop_all(state_dir: str | None) -> None:
    """Stop every shared judge server of a run (SIGTERM to each watcher, which stops its server) and remove its
    state folder with the key; a folder that is not private to this user is left alone (its state files could
    name any process)."""
    if not state_dir:
        return
    try:
        check_private(state_dir)
    except OSError:
        return
    for state in Path(state_dir).glob("*.json"):
        with contextlib.suppress(Exception):
            os.kill(json.loads(state.read_text())["pid"], signal.SIGTERM)
        state.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        for lock in Path(state_dir).glob("*.lock"):
            lock.unlink()
        Path(state_dir, SECRET_NAME).unlink(missing_ok=True)
        Path(state_dir).rmdir()


def watch(owner: int, command: list[str], poll_s: float = 2.0) -> int:
    """Run ``command`` in its own process group until it exits, this process gets SIGTERM / SIGINT, or the
    ``owner`` process is gone; then stop the group (SIGTERM, SIGKILL after 20 s)."""
    proc = subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    while proc.poll() is None and not stop and _alive(owner):
        time.sleep(poll_s)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode or 0


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1]), sys.argv[2:]))
