"""A fork server for local Snakemake runs: stage jobs start from a process that has already imported
torch, transformers and peft, instead of importing them again (~4-5 s per job, measured).

Why: every Snakemake job is a fresh Python process, and on the embedded default most of a job's wall time
is importing the model stack (a generate job: ~1.5 s generating, ~5 s importing). Snakemake has no
persistent worker for ``script:`` jobs, so the Snakefile starts this server for a local run
(``onstart``) and stops it at the end; a job's script calls :func:`tokensafe.runtime.job.start_job` first, which
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

Who may use it: only the user and run that started it (it runs the script a request names). Its socket
sits in a private directory with a per-run secret; a request from another uid, or without the secret, is
refused before anything runs and logged (tokensafe.runtime.jobsocket). The server removes the directory when
it stops.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import sys
import time
import traceback

from tokensafe.runtime.jobsocket import peer, prepare, read_secret, recv, refusal, refuse, send

ENV_SOCKET = "TOKENSAFE_JOB_SERVER"  # path of the server's socket, set for the jobs of a local run; "off" disables
ENV_CHILD = "TOKENSAFE_JOB_SERVER_CHILD"  # set in a forked job: its start_job() must not delegate again
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


# ---------------------------------------------------------------------------------------------- client side


def delegate() -> None:
    """Called first by a stage script (via tokensafe.runtime.job.start_job): hand this job to the server and exit
    with the job's status, or return (run here) when there is no server to hand it to."""
    path = os.environ.get(ENV_SOCKET, "off")
    if path == "off" or os.environ.get(ENV_CHILD) or not os.path.exists(path):
        return
    try:
        secret = read_secret(path)
    except PermissionError as e:  # never hand this job's environment and streams to someone else's server
        print(f"tokensafe job server: not used, {e}; running the job in its own process", file=sys.stderr)
        return
    except OSError:
        return  # the server stopped meanwhile: run here
    script = os.path.abspath(sys.argv[0])
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError:
        return  # a server of another host (shared file system) or one that has stopped: run here
    request = {"script": script, "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "secret": secret}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        send(conn, request, [0, 1, 2])
    except OSError:
        pass  # hung up before reading it (a refusal): its reply below says why
    try:
        started, _ = recv(conn)
    except ConnectionError:
        return  # closed before forking (e.g. shutting down): run here
    if "refused" in started:
        raise SystemExit(f"tokensafe job server {path} refused this job: {started['refused']}")
    pid = started["pid"]

    def forward(signum, _frame):  # Snakemake stops a job by signalling its process: stop the child too
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        done, _ = recv(conn)
        status = int(done["status"])
    except ConnectionError:
        print(f"tokensafe job server: lost the connection while job {pid} ran", file=sys.stderr)
        status = 1
    os._exit(status)


# ---------------------------------------------------------------------------------------------- server side


def _run_child(request: dict, fds: list[int]) -> int:
    """In the forked child: become the job, run its script, return its exit status."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server's handler is no job's
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
    process) is gone, or nothing ran for ``idle_s`` seconds. ``path`` is a socket path from :func:`prepare`:
    its private directory (with the run's secret) is this server's from now on and goes when it stops."""
    try:
        secret = read_secret(path)
    except OSError as e:
        print(f"tokensafe job server: not serving, {e}", flush=True)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a plain kill still removes the directory
    try:
        _serve(path, secret, parent, idle_s)
    finally:
        shutil.rmtree(os.path.dirname(os.path.abspath(path)), ignore_errors=True)


def _serve(path: str, secret: str, parent: int, idle_s: float) -> None:
    import gc
    import importlib

    # numpy (imported by torch) would start OpenBLAS's worker threads; the package does no numpy linear
    # algebra (torch runs every matrix product), so its BLAS stays on one thread in every job.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound under another name until the preload is done: the first (light) jobs of a run start in their
    # own processes meanwhile instead of waiting for it. Mode 0600 whatever the caller's umask.
    umask = os.umask(0o177)
    try:
        listener.bind(path + ".preloading")
    finally:
        os.umask(umask)
    listener.listen(64)
    t0 = time.time()
    for name in PRELOAD:
        importlib.import_module(name)
    for module, attrs in PRELOAD_ATTRS:
        mod = sys.modules[module]
        for attr in attrs:
            getattr(mod, attr)
    gc.collect()
    gc.freeze()  # children skip the preloaded objects in their collections (see tokensafe.runtime.job)
    threads = _threads()
    print(
        f"tokensafe job server: preloaded in {time.time() - t0:.1f} s, {threads} thread(s), pid {os.getpid()}",
        flush=True,
    )
    if threads != 1:  # forking a multi-threaded process is unsafe (locks held by other threads)
        print("tokensafe job server: more than one thread after the preload: not serving", flush=True)
        listener.close()
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
            ids = peer(conn)
            if ids is not None and ids[1] != os.geteuid():
                refuse(conn, ids, f"uid {ids[1]} is not this server's user (uid {os.geteuid()})")
                continue
            try:
                request, fds = recv(conn, with_fds=3)
            except (ConnectionError, OSError, ValueError, RecursionError) as e:
                refuse(conn, ids, f"malformed request ({type(e).__name__})")
                continue
            reason = refusal(request, fds, secret)
            if reason is not None or request.get("stop"):
                for fd in fds:
                    os.close(fd)
                if reason is not None:
                    refuse(conn, ids, reason)
                    continue
                stopping = True
                conn.close()
                continue
            conn.settimeout(None)
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
                send(conn, {"pid": pid})
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
                    send(conn, {"status": code if code >= 0 else 128 - code})
                except OSError:
                    pass
                conn.close()
            last = time.time()
        parent_gone = parent and not _alive(parent)
        if not running and (stopping or parent_gone or time.time() - last > idle_s):
            break
    listener.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---------------------------------------------------------------------------------------------- Snakefile side


def start(log_path: str) -> str:
    """Start a server for this (local) run in the background, in a fresh private directory (:func:`prepare`);
    returns its socket path. Jobs find it through ``TOKENSAFE_JOB_SERVER``, which this sets in the environment
    they inherit."""
    import subprocess

    path = prepare()
    os.makedirs(os.path.dirname(os.path.abspath(log_path)) or ".", exist_ok=True)
    with open(log_path, "w") as log:
        subprocess.Popen(
            [sys.executable, "-m", "tokensafe.runtime.jobserver", path, str(os.getpid())],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    os.environ[ENV_SOCKET] = path
    return path


def stop(path: str | None) -> None:
    """Ask the server at ``path`` to stop once its running jobs are done (no-op when none is up)."""
    if not path:
        return
    try:
        secret = read_secret(path)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        send(conn, {"stop": True, "secret": secret})
        conn.close()
    except OSError:
        pass


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
