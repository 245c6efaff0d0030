"""A local OpenAI-compatible server as a subprocess: vLLM's API server on a free loopback port.

Used by the tests (a real endpoint for the LLM judge) and usable by a stage that judges with a local model::

    with OpenAIServer(model_dir, python=".venv-vllm/bin/python", log_path="logs/judge_server.log") as srv:
        run_win_rate(..., judge_cfg={"base_url": srv.base_url, "model": srv.served_model_name, "api_key_env": None})

Kinds: ``vllm`` (vLLM's API server, the vLLM environment) and ``transformers`` (``transformers serve``, the main
environment, so a laptop without vLLM can serve a local judge). ``transformers serve`` (transformers 5.23)
answers ``/v1/chat/completions`` for a local model folder pinned at start (two identical temperature-0
requests give the same text; measured: ready in ~9 s, ~0.2 s a short answer on a 2-core CPU), but its served
model name is the folder as given (a request for another name is refused), ``GET /v1/models`` answers 500
with a local folder, and it has no ``/metrics`` request counter: readiness is polled on ``/health`` and then
one 1-token chat completion (the model is loaded), and :meth:`request_count` is vLLM's only.

The server runs in its own session (process group) so :meth:`stop` and :meth:`kill` reach vLLM's engine-core
child as well. Readiness is polled on ``/v1/models``; a server that exits while starting raises with its log.
On CPU vLLM sizes its KV cache from ``VLLM_CPU_KVCACHE_SPACE`` (GiB), set here from ``kv_cache_gib``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        if self.kind == "transformers":
            cmd = [self.python, "-m", "transformers.cli.transformers", "serve", self.model, "--dtype", self.dtype]
            return cmd + ["--device", self.device, "--host", "127.0.0.1", "--port", str(self.port), *self.extra_args]
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model]
        cmd += ["--served-model-name", self.served_model_name, "--dtype", self.dtype]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(int(self.max_model_len))]
        return cmd + list(self.extra_args)

    def _get(self, path: str, timeout: float = 5) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
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
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def popen(self, command: list[str], log) -> subprocess.Popen:
        """Start ``command`` (the server, or a wrapper around it) in its own session, the server's settings set."""
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib)}
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

    def start(self) -> OpenAIServer:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"the server on port {self.port} is already running")
        self.port = self.port or free_port()
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
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

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
