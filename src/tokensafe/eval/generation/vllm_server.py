"""One vLLM engine shared by every generate job on the same base model (``generation.vllm.engine: shared``).

Each run keeps its own ``generate`` job, so reruns stay per run; only the engine is shared. The first job that needs
it starts this server in the vLLM environment (``python -m tokensafe.eval.generation.vllm_server``), detached, on a
Unix socket named by a hash of the interpreter, the model and the engine settings, in the user's private directory
(:func:`tokensafe.runtime.jobsocket.user_dir`: 0700, refused when it is not this user's); later jobs connect to it and
send their prompt sets with their adapter, which the engine takes as one more ``LoRARequest``. The server runs one
request at a time (pings are answered meanwhile) and exits once no job has connected for ``IDLE_S`` seconds. A socket
is node-local, so on SLURM the workflow shares an engine only among the jobs of one group job (a run's evaluation, in
one allocation: tokensafe.plan.job_environment.engine_mode); other jobs there use per-run engines.

Only the user who started it may use it: besides the private directory (and a 0600 socket), the server checks
each peer's uid (``SO_PEERCRED``) and refuses, and logs, any other before reading its request.

Protocol: one JSON line per request, ``{"sets": [[prompts, gen_cfg, adapter], ...], "logprobs": k | null}``,
answered by one JSON line, ``{"outputs": [[{"token_ids": [...]}, ...], ...]}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from tokensafe.runtime.jobsocket import check_private, peer, refuse, user_dir

IDLE_S = 120  # a sweep's generate jobs start seconds apart; an engine idle this long is not needed any more
START_TIMEOUT_S = 900
# In a SLURM group job the group's own Snakemake knows how many generate jobs it runs (tokensafe.plan.job_environment):
# the engine exits after answering that many, freeing the GPU for the judge and lm_eval jobs that follow at once.
ENV_REQUESTS = "TOKENSAFE_VLLM_ENGINE_REQUESTS"


def socket_path(python: str, model: str, vllm_cfg: dict) -> str:
    # Within a SLURM allocation, the allocation is part of the key: two group jobs on one node each use the engine
    # on their own GPUs, which ends with their allocation.
    key = json.dumps([python, os.path.abspath(model), vllm_cfg, os.environ.get("SLURM_JOB_ID")], sort_keys=True)
    return os.path.join(user_dir(), f"tokensafe-vllm-{hashlib.sha256(key.encode()).hexdigest()[:16]}.sock")


def _send(path: str, request: dict, timeout: float | None) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall((json.dumps(request) + "\n").encode())
        except BrokenPipeError:
            pass  # hung up before reading it (a refusal): its answer below says why
        with s.makefile("r") as f:
            line = f.readline()
    if not line:
        raise RuntimeError(f"the shared vLLM engine at {path} closed the connection without an answer")
    return json.loads(line)


def _ready(path: str) -> bool:
    try:
        return _send(path, {"ping": True}, timeout=10).get("pong") is True
    except OSError:
        return False


def ensure_server(python: str, model: str, vllm_cfg: dict, log_path: str) -> str:
    """The socket of a running engine server for (python, model, settings), started here if there is none.
    A lock file makes concurrent jobs start one server, not one each."""
    path = socket_path(python, model, vllm_cfg)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ready(path):
            return path
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            requests = os.environ.get(ENV_REQUESTS, "")
            proc = subprocess.Popen(
                [python, "-m", "tokensafe.eval.generation.vllm_server", path, model, json.dumps(vllm_cfg), requests],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.time() + START_TIMEOUT_S
        while not _ready(path):
            if proc.poll() is not None:
                raise RuntimeError(f"the shared vLLM engine exited while starting ({proc.returncode}); see {log_path}")
            if time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"the shared vLLM engine did not start in {START_TIMEOUT_S} s; see {log_path}")
            time.sleep(1)
    return path


def run_shared(python: str, model: str, vllm_cfg: dict, sets: list, log_path: str) -> list[list[SimpleNamespace]]:
    """:func:`.vllm_backend.run_vllm_sets` through the shared engine: per set, per prompt, an object with the
    completion's ``token_ids``."""
    path = ensure_server(python, model, vllm_cfg, log_path)
    answer = _send(path, {"sets": [[list(p), cfg, a] for p, cfg, a in sets], "logprobs": None}, timeout=None)
    if "error" in answer or "refused" in answer:
        why = answer.get("error") or f"refused: {answer['refused']}"
        raise RuntimeError(f"the shared vLLM engine failed: {why} (its log: {log_path})")
    return [[SimpleNamespace(token_ids=c["token_ids"]) for c in out] for out in answer["outputs"]]


def serve(path: str, model: str, vllm_cfg: dict, idle_s: float = IDLE_S, max_requests: int | None = None) -> None:
    """Answer requests until no job has connected for ``idle_s`` seconds, or until ``max_requests`` prompt requests
    have been answered. Each connection gets a thread, so a ping is answered while another job's prompts run (a busy
    engine is not a dead one); the engine itself runs one request at a time."""
    from tokensafe.eval.generation.vllm_backend import Engine

    try:
        check_private(os.path.dirname(os.path.abspath(path)))
    except PermissionError as e:
        print(f"not serving: {e}", flush=True)
        return
    t0 = time.time()
    engine = Engine(model, vllm_cfg, lora=True)
    print(f"engine on {model} ready in {time.time() - t0:.1f} s", flush=True)
    busy = threading.Lock()
    answered = []  # one entry per prompt request answered
    done = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn, conn.makefile("r") as f:
            request = json.loads(f.readline() or "{}")
            if request.get("ping"):
                conn.sendall(b'{"pong": true}\n')
                return
            with busy:
                t = time.time()
                try:
                    outs = engine.run([tuple(s) for s in request["sets"]], request.get("logprobs"))
                    answer = {"outputs": [[{"token_ids": list(c.token_ids)} for c in o] for o in outs]}
                except Exception as e:  # the job that sent it fails with the reason; the engine stays up
                    answer = {"error": f"{type(e).__name__}: {e}"}
                n = sum(len(s[0]) for s in request["sets"])
                adapters = sorted({s[2] for s in request["sets"] if s[2]})
                print(f"{n} prompts, adapters {adapters}: {time.time() - t:.1f} s", flush=True)
            conn.sendall((json.dumps(answer) + "\n").encode())
            answered.append(1)
            if max_requests is not None and len(answered) >= max_requests:
                done.set()

    if os.path.lexists(path):
        os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        umask = os.umask(0o177)  # the socket 0600 whatever the caller's umask
        try:
            srv.bind(path)
        finally:
            os.umask(umask)
        srv.listen(64)
        srv.settimeout(min(idle_s, 1.0))
        last = time.time()
        while True:
            if done.is_set():
                print(f"answered the {max_requests} requests expected: exiting", flush=True)
                break
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                if busy.locked():
                    last = time.time()  # a long request is not idleness
                elif time.time() - last >= idle_s:
                    print(f"idle for {idle_s} s: exiting", flush=True)
                    break
                continue
            last = time.time()
            ids = peer(conn)
            if ids is not None and ids[1] != os.geteuid():
                refuse(conn, ids, f"uid {ids[1]} is not this engine's user (uid {os.geteuid()})", "vLLM engine", True)
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    os.unlink(path)


if __name__ == "__main__":  # vLLM starts its engine core with spawn: the guard keeps the children from re-serving
    expected = sys.argv[4] if len(sys.argv) > 4 else ""
    serve(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), max_requests=int(expected) if expected else None)
