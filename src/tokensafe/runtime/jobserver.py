"""A fork server for local Snakemake runs: stage jobs start from a process that has already imported
torch, transformers and peft, instead of importing them again (~4-5 s per job, measured).

Why: every Snakemake job is a fresh Python process, and on the embedded default most of a job's wall time
is importing the model stack (a generate job: ~1.5 s generating, ~5 s importing). Snakemake has no
persistent worker for ``script:`` jobs, so the Snakefile starts this server for a local run
(``onstart``) and stops it at the end; a job's script calls :func:`tokensafe.runtime.logs.setup` first, which
hands the job over here (:func:`delegate`) when a server is up. The server forks a child per job; the child
takes the job's working directory, environment, standard streams and thread count, then runs the job's
script file exactly as ``python script.py`` would, and its exit status becomes the job's.

What stays the same: outputs (the child runs the same code with the same environment and thread count;
the server runs no tensor operation before forking, so the child's kernels, MKL and OpenMP initialise
from the job's environment; tests compare outputs with and without the server), logs, exit status and
wall time. What changes: Snakemake's ``benchmark:`` files see the job's client process, so their
``s`` (wall time) is the job's, but ``cpu_time`` and ``max_rss`` no longer include the stage's work.
Without a server (SLURM jobs on other nodes, ``TOKENSAFE_JOB_SERVER=off``, a server that is not up),
jobs run in their own process as before.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback

ENV_SOCKET = "TOKENSAFE_JOB_SERVER"  # path of the server's socket, set for the jobs of a local run; "off" disables
ENV_CHILD = "TOKENSAFE_JOB_SERVER_CHILD"  # set in a forked job: its setup() must not delegate again
# Not pandas / pyarrow: importing pyarrow starts a thread, and a process must be single-threaded to fork safely.
PRELOAD = [
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors.torch",
    "tokenizers",
    "snakemake.io",
    "snakemake.script",
]
# transformers resolves these lazily on first use (most of a model load's import time); touch them once.
PRELOAD_ATTRS = [
    (
        "transformers",
        [
            "AutoModelForCausalLM",
            "AutoTokenizer",
            "AutoConfig",
            "LlamaForCausalLM",
            "LlamaConfig",
            "PreTrainedTokenizerFast",
        ],
    ),
    ("peft", ["PeftModel", "LoraConfig", "get_peft_model"]),
]


def _send(conn: socket.socket, obj: dict, fds: list[int] = ()) -> None:
    data = json.dumps(obj).encode()
    msg = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(conn, [msg], list(fds))
    else:
        conn.sendall(msg)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def _recv(conn: socket.socket, with_fds: int = 0) -> tuple[dict, list[int]]:
    fds: list[int] = []
    if with_fds:
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, with_fds)
        if len(msg) < 4:
            raise ConnectionError("short request")
        (n,) = struct.unpack("!I", msg[:4])
        body = msg[4:]
        if len(body) < n:
            body += _recv_exact(conn, n - len(body))
    else:
        (n,) = struct.unpack("!I", _recv_exact(conn, 4))
        body = _recv_exact(conn, n)
    return json.loads(body), fds


# ---------------------------------------------------------------------------------------------- client side


def delegate() -> None:
    """Called first by a stage script (via tokensafe.runtime.logs.setup): hand this job to the server and exit
    with the job's status, or return (run here) when there is no server to hand it to."""
    path = os.environ.get(ENV_SOCKET, "off")
    if path == "off" or os.environ.get(ENV_CHILD) or not os.path.exists(path):
        return
    script = os.path.abspath(sys.argv[0])
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError:
        return  # a server of another host (shared file system) or one that has stopped: run here
    request = {"script": script, "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    _send(conn, request, [0, 1, 2])
    try:
        started, _ = _recv(conn)
    except ConnectionError:
        return  # refused before forking (e.g. shutting down): run here
    pid = started["pid"]

    def forward(signum, _frame):  # Snakemake stops a job by signalling its process: stop the child too
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        done, _ = _recv(conn)
        status = int(done["status"])
    except ConnectionError:
        print(f"tokensafe job server: lost the connection while job {pid} ran", file=sys.stderr)
        status = 1
    os._exit(status)


# ---------------------------------------------------------------------------------------------- server side


def _run_child(request: dict, fds: list[int]) -> int:
    """In the forked child: become the job, run its script, return its exit status."""
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[ENV_CHILD] = "1"
    sys.argv = list(request["argv"])
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.pop(ENV_SOCKET, None)
    # OpenMP read OMP_NUM_THREADS when the server loaded it: apply the job's count (Snakemake exports the
    # rule's threads), as a fresh process would have.
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    import runpy

    try:
        runpy.run_path(request["script"], run_name="__main__")
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - report like an uncaught error in a fresh process
        sys.excepthook(*sys.exc_info())
        status = 1
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    return status


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def serve(path: str, parent: int, idle_s: float = 3600.0) -> None:
    """Preload the model stack, then fork a child per job until told to stop, the parent (the Snakemake
    process) is gone, or nothing ran for ``idle_s`` seconds."""
    import gc
    import importlib

    # numpy (imported by torch) would start OpenBLAS's worker threads; the package does no numpy linear
    # algebra (torch runs every matrix product), so its BLAS stays on one thread in every job.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    for stale in (path, path + ".preloading"):
        if os.path.exists(stale):
            os.unlink(stale)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound under another name until the preload is done: the first (light) jobs of a run start in their
    # own processes meanwhile instead of waiting for it.
    listener.bind(path + ".preloading")
    listener.listen(64)
    t0 = time.time()
    for name in PRELOAD:
        importlib.import_module(name)
    for module, attrs in PRELOAD_ATTRS:
        mod = sys.modules[module]
        for attr in attrs:
            getattr(mod, attr)
    gc.collect()
    gc.freeze()  # children skip the preloaded objects in their collections (see tokensafe.runtime.logs)
    threads = _threads()
    print(
        f"tokensafe job server: preloaded in {time.time() - t0:.1f} s, {threads} thread(s), pid {os.getpid()}",
        flush=True,
    )
    if threads != 1:  # forking a multi-threaded process is unsafe (locks held by other threads)
        print("tokensafe job server: more than one thread after the preload: not serving", flush=True)
        listener.close()
        os.unlink(path + ".preloading")
        return
    os.rename(path + ".preloading", path)  # from now on jobs find it
    running: dict[int, socket.socket] = {}
    last = time.time()
    stopping = False
    while True:
        ready, _, _ = select.select([listener], [], [], 0.05)
        if ready and not stopping:
            conn, _ = listener.accept()
            conn.settimeout(30)  # a client that connects and sends nothing must not stall every other job
            try:
                request, fds = _recv(conn, with_fds=3)
            except (ConnectionError, OSError, ValueError):
                conn.close()
                continue
            conn.settimeout(None)
            if request.get("stop"):
                stopping = True
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                for other in running.values():
                    other.close()
                status = 1
                try:
                    status = _run_child(request, fds)
                except BaseException:  # noqa: BLE001 - never return into the server loop
                    traceback.print_exc()
                finally:
                    os._exit(status)
            for fd in fds:
                os.close(fd)
            try:
                _send(conn, {"pid": pid})
            except OSError:
                pass
            running[pid] = conn
        while running:
            pid, wstatus = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = running.pop(pid, None)
            if conn is not None:
                code = os.waitstatus_to_exitcode(wstatus)
                try:
                    _send(conn, {"status": code if code >= 0 else 128 - code})
                except OSError:
                    pass
                conn.close()
            last = time.time()
        parent_gone = parent and not _alive(parent)
        if not running and (stopping or parent_gone or time.time() - last > idle_s):
            break
    listener.close()
    if os.path.exists(path):
        os.unlink(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---------------------------------------------------------------------------------------------- Snakefile side


def start(path: str, log_path: str) -> int:
    """Start a server for this (local) run in the background; returns its pid. Jobs find it through
    ``TOKENSAFE_JOB_SERVER``, which this sets in the environment they inherit."""
    import subprocess

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(log_path)) or ".", exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tokensafe.runtime.jobserver", path, str(os.getpid())],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    os.environ[ENV_SOCKET] = os.path.abspath(path)
    return proc.pid


def stop(path: str) -> None:
    """Ask the server to stop once its running jobs are done (no-op when none is up)."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        _send(conn, {"stop": True}, [0, 1, 2])
        conn.close()
    except OSError:
        pass


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
