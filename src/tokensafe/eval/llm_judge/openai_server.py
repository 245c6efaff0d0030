"""A local OpenAI-compatible server as a subprocess: vLLM's API server on a free loopback port.

Used by the tests (a real endpoint for the LLM judge) and usable by a stage that judges with a local model::

    with OpenAIServer(model_dir, python=".venv-vllm/bin/python", log_path="logs/judge_server.log") as srv:
        run_win_rate(..., judge_cfg={"base_url": srv.base_url, "model": srv.served_model_name,
                                     "api_key_env": None, "api_key_file": srv.key_file})

Kinds: ``vllm`` (vLLM's API server, the vLLM environment) and ``transformers`` (``transformers serve``, the main
environment, so a laptop without vLLM can serve a local judge). ``transformers serve`` (transformers 5.23)
answers ``/v1/chat/completions`` for a local model folder pinned at start (two identical temperature-0
requests give the same text; measured: ready in ~9 s, ~0.2 s a short answer on a 2-core CPU), but its served
model name is the folder as given (a request for another name is refused), ``GET /v1/models`` answers 500
with a local folder, and it has no ``/metrics`` request counter: readiness is polled on ``/health`` and then
one 1-token chat completion (the model is loaded), and :meth:`request_count` is vLLM's only.

Only this user's run may use it (:mod:`tokensafe.runtime.httpkey`): every request must carry a per-run key,
read from ``key_file`` (a 0600 file in a private directory; without one, :meth:`start` makes its own and
:meth:`stop` removes it) and handed to the server in its environment, never on its command line; a server that
answers without the key is not used. Clients send it from that file (``api_key_file`` of
:mod:`tokensafe.eval.llm_judge.judge_client`).

The server runs in its own session (process group) so :meth:`stop` and :meth:`kill` reach vLLM's engine-core
child as well. Readiness is polled on ``/v1/models``; a server that exits while starting raises with its log.
On CPU vLLM sizes its KV cache from ``VLLM_CPU_KVCACHE_SPACE`` (GiB), set here from ``kv_cache_gib``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tokensafe.runtime.httpkey import ENV_KEY, GATE, header
from tokensafe.runtime.jobsocket import SECRET_NAME, private_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpenAIServer:
    def __init__(
        self,
        model: str,
        *,
        python: str,
        log_path: str | os.PathLike,
        served_model_name: str = "judge",
        dtype: str = "float32",
        max_model_len: int | None = None,
        kv_cache_gib: float = 1,
        port: int | None = None,
        start_timeout_s: float = 600,
        extra_args: tuple[str, ...] = (),
        kind: str = "vllm",
        device: str = "cpu",
        key_file: str | None = None,
    ):
        if kind not in ("vllm", "transformers"):
            raise ValueError(f"unknown server kind {kind!r} (vllm | transformers)")
        self.kind, self.device = kind, device
        if kind == "transformers":
            served_model_name = str(model)  # transformers serve answers only to the folder's name
        self.model, self.python, self.log_path = str(model), str(python), Path(log_path)
        self.served_model_name, self.dtype, self.max_model_len = served_model_name, dtype, max_model_len
        self.kv_cache_gib, self.port, self.start_timeout_s = kv_cache_gib, port, start_timeout_s
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self.key_file, self._own_key_dir = key_file, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        if self.kind == "transformers":
            cmd = [self.python, "-m", "tokensafe.runtime.httpkey", "serve", self.model, "--dtype", self.dtype]
            return cmd + ["--device", self.device, "--host", "127.0.0.1", "--port", str(self.port), *self.extra_args]
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model]
        cmd += ["--served-model-name", self.served_model_name, "--dtype", self.dtype]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--middleware", GATE]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(int(self.max_model_len))]
        return cmd + list(self.extra_args)

    def key(self) -> str:
        if self.key_file is None:
            raise RuntimeError("the server has no key file yet (start() makes one)")
        with open(self.key_file) as f:
            return f.read().strip()

    def _get(self, path: str, timeout: float = 5, keyed: bool = True) -> str:
        req = urllib.request.Request(self.url + path, headers=header(self.key()) if keyed else {})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()

    def ready(self) -> bool:
        """Whether the server answers (vLLM: ``/v1/models``; transformers: ``/health`` and a 1-token completion)."""
        try:
            if self.kind == "vllm":
                self._get("/v1/models")
                return True
            self._get("/health")
            body = {"model": self.served_model_name, "messages": [{"role": "user", "content": "ok"}], "max_tokens": 1}
            req = urllib.request.Request(
                self.base_url + "/chat/completions",
                data=json.dumps(body).encode(),
                method="POST",
                headers={"Content-Type": "application/json", **header(self.key())},
            )
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def refuses_keyless(self) -> bool:
        """Whether a request without the key is refused (401): the server is gated (and so is ours)."""
        try:
            self._get("/v1/models", keyed=False)
        except urllib.error.HTTPError as e:
            return e.code == 401
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False
        return False

    def popen(self, command: list[str], log) -> subprocess.Popen:
        """Start ``command`` (the server, or a wrapper around it) in its own session, the server's settings set."""
        key = self.key()  # vLLM checks it on /v1 itself too; the gate (GATE) on every path
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib), ENV_KEY: key, "VLLM_API_KEY": key}
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )

    def wait_ready(self) -> None:
        deadline = time.time() + self.start_timeout_s
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the OpenAI-compatible server exited while starting (code {self.proc.returncode}); "
                    f"see {self.log_path}"
                )
            if time.time() > deadline:
                self.kill()
                raise RuntimeError(f"the server did not answer in {self.start_timeout_s} s; see {self.log_path}")
            time.sleep(0.5)
        if not self.refuses_keyless():
            self.kill()
            raise RuntimeError(
                f"the server on port {self.port} answered a request without the run's key: not used "
                f"(see {self.log_path})"
            )

    def start(self) -> OpenAIServer:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"the server on port {self.port} is already running")
        self.port = self.port or free_port()
        if self.key_file is None:
            self._own_key_dir = private_dir("judge")
            self.key_file = os.path.join(self._own_key_dir, SECRET_NAME)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:
            self.proc = self.popen(self.command(), log)
        self.wait_ready()
        return self

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM to the server's process group; SIGKILL if it is not gone after ``timeout_s``."""
        if self.proc is not None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._own_key_dir is not None:
            shutil.rmtree(self._own_key_dir, ignore_errors=True)
            self._own_key_dir = self.key_file = None

    def kill(self) -> None:
        """SIGKILL the whole group at once (a server that dies, for the tests)."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(30)

    def request_count(self) -> int:
        """Completed requests by vLLM's own count: the sum of ``vllm:request_success_total`` over finish reasons."""
        text = self._get("/metrics")
        found = re.findall(r"^vllm:request_success_total\{[^}]*\}\s+([0-9.eE+-]+)$", text, flags=re.M)
        if not found:
            raise RuntimeError(f"{self.url}/metrics has no vllm:request_success_total")
        return int(round(sum(float(v) for v in found)))

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
