"""A cached chat-completions client for LLM judges behind any OpenAI-compatible endpoint (GPT-4o, a local vLLM).

Settings (``judge_cfg``, see :mod:`tokensafe.stages.llm_judge_scores` for the whole shape) read here:

* ``base_url`` (required), ``model`` (required): the endpoint and the judge model name it serves;
* ``api_key_env`` (default ``OPENAI_API_KEY``): the *name* of the environment variable holding the key. The
  key itself is never stored, logged or hashed. ``null`` means a keyless local server (the ``openai`` client
  still needs a non-empty string, so it gets ``EMPTY``);
* ``api_key_file`` (not a config key): set by the workflow for a local judge server it starts, the 0600 file in
  a private folder holding that server's per-run key (:mod:`tokensafe.eval.llm_judge.openai_server`); read when the
  client is made, it takes the place of ``api_key_env``;
* ``temperature`` (default 0), ``max_tokens`` (default: the template's published value), ``timeout_s``
  (default 120), ``max_retries`` (default 6), ``concurrency`` (default 4 requests in flight).

Retries: the ``openai`` client's own ``max_retries`` machinery. It retries connection errors and timeouts,
408, 409, 429 and every 5xx answer, with exponential backoff (0.5 s doubling to at most 8 s, with jitter) and
it honours a ``Retry-After`` header; that covers rate limits and a briefly overloaded or restarting server.
A server that stays dead exhausts those retries and raises ``APIConnectionError``; no outer loop is added
on purpose: the stage then fails with :class:`JudgeUnavailable` (every answer received so far is already on
disk), and its rerun asks only what is missing.

Cache: one JSON file per request under ``cache_dir``, named by the sha256 of the canonical JSON (sorted keys,
no spaces) of ``{"model", "messages", "params"}`` (params: temperature and max_tokens). The endpoint's URL is
not part of the key: the same judge model behind another port or proxy answers from the same cache. Each
answer is written atomically the moment it arrives, so a killed stage loses at most the requests in flight;
a cache hit sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import urlparse

from tokensafe.io import write_json

log = logging.getLogger("tokensafe")

DEFAULTS = {
    "api_key_env": "OPENAI_API_KEY",
    "api_key_file": None,
    "temperature": 0.0,
    "max_tokens": None,
    "timeout_s": 120.0,
    "max_retries": 6,
    "concurrency": 4,
}
KEYLESS = "EMPTY"


class JudgeUnavailable(RuntimeError):
    """The judge endpoint could not answer (after the client's retries); answers so far are cached."""


def endpoint_host(base_url: str) -> str:
    """The host part of a base URL (what outputs may record: no path, no credentials, no port)."""
    return urlparse(base_url).hostname or ""


def request_key(model: str, messages: list[dict], params: dict) -> str:
    canon = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def judge_settings(judge_cfg: dict) -> dict:
    """``judge_cfg`` with defaults filled in; ``base_url`` and ``model`` are required."""
    missing = [k for k in ("base_url", "model") if not judge_cfg.get(k)]
    if missing:
        raise ValueError(f"judge config: missing {', '.join(missing)}")
    cfg = {**DEFAULTS, **judge_cfg}
    if int(cfg["concurrency"]) < 1:
        raise ValueError(f"judge config: concurrency must be >= 1, found {cfg['concurrency']!r}")
    return cfg


class JudgeClient:
    """Chat completions with a disk cache. ``sent`` counts requests that reached the network, ``hits`` cache hits."""

    def __init__(self, judge_cfg: dict, cache_dir: str | os.PathLike):
        self.cfg = judge_settings(judge_cfg)
        self.model = str(self.cfg["model"])
        self.cache_dir = Path(cache_dir)
        self.sent = 0
        self.hits = 0
        self._lock = threading.Lock()
        self._client = None

    # -- the endpoint -----------------------------------------------------------------------------------
    def _api(self):
        with self._lock:
            return self._make_api()

    def _make_api(self):
        if self._client is None:
            from openai import OpenAI

            env = self.cfg["api_key_env"]
            if self.cfg["api_key_file"]:
                key = Path(self.cfg["api_key_file"]).read_text().strip()
            elif env is None:
                key = KEYLESS
            else:
                key = os.environ.get(env)
                if not key:
                    raise ValueError(f"judge config: the API key variable {env} is not set in the environment")
            self._client = OpenAI(
                base_url=self.cfg["base_url"],
                api_key=key,
                timeout=float(self.cfg["timeout_s"]),
                max_retries=int(self.cfg["max_retries"]),
            )
        return self._client

    def _params(self, max_tokens: int | None) -> dict:
        mt = self.cfg["max_tokens"] if self.cfg["max_tokens"] is not None else max_tokens
        return {"temperature": float(self.cfg["temperature"]), "max_tokens": None if mt is None else int(mt)}

    # -- the cache --------------------------------------------------------------------------------------
    def cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def cached(self, messages: list[dict], max_tokens: int | None = None) -> str | None:
        path = self.cache_path(request_key(self.model, messages, self._params(max_tokens)))
        return json.loads(path.read_text())["answer"] if path.exists() else None

    def _one(self, messages: list[dict], params: dict) -> str:
        key = request_key(self.model, messages, params)
        path = self.cache_path(key)
        if path.exists():
            with self._lock:
                self.hits += 1
            return json.loads(path.read_text())["answer"]
        kwargs = {k: v for k, v in params.items() if v is not None}
        with self._lock:
            self.sent += 1
        try:
            out = self._api().chat.completions.create(model=self.model, messages=messages, **kwargs)
        except Exception as e:
            import openai

            host = endpoint_host(self.cfg["base_url"])
            if isinstance(e, openai.APIConnectionError) or (
                isinstance(e, openai.APIStatusError) and (e.status_code in (408, 409, 429) or e.status_code >= 500)
            ):
                raise JudgeUnavailable(
                    f"the judge endpoint {host} ({self.model}) failed after {self.cfg['max_retries']} retries: "
                    f"{type(e).__name__}: {e}. Every answer received so far is cached in {self.cache_dir}; "
                    "a rerun asks only the rest"
                ) from e
            if isinstance(e, openai.APIStatusError):  # 400, 401, 404 ...: not retried, and not a transient state
                raise RuntimeError(
                    f"the judge endpoint {host} ({self.model}) rejected a request: {type(e).__name__}: {e}"
                ) from e
            raise
        choice = out.choices[0]
        answer = choice.message.content or ""
        write_json(
            {"model": self.model, "params": params, "answer": answer, "finish_reason": choice.finish_reason}, path
        )
        return answer

    # -- many requests ----------------------------------------------------------------------------------
    def complete(self, requests: list[list[dict]], max_tokens: int | None = None, what: str = "judge") -> list[str]:
        """The answers to ``requests`` (each a message list), in order; ``concurrency`` in flight at once.

        The first failure cancels what has not started and raises (answers already received stay cached)."""
        params = self._params(max_tokens)
        n = len(requests)
        answers: list[str | None] = [None] * n
        sent0, hits0, t0 = self.sent, self.hits, time.time()
        last = [t0]
        done = [0]

        def run(i: int) -> None:
            answers[i] = self._one(requests[i], params)
            with self._lock:
                done[0] += 1
                if time.time() - last[0] > 10 or done[0] == n:
                    last[0] = time.time()
                    log.info(
                        "%s: %d/%d answered (%d sent, %d from the cache)",
                        what,
                        done[0],
                        n,
                        self.sent - sent0,
                        self.hits - hits0,
                    )

        with ThreadPoolExecutor(max_workers=int(self.cfg["concurrency"])) as pool:
            futures = [pool.submit(run, i) for i in range(n)]
            wait(futures, return_when=FIRST_EXCEPTION)
            errors = [f.exception() for f in futures if f.done() and f.exception() is not None]
            if errors:
                for f in futures:
                    f.cancel()
                raise errors[0]
        log.info(
            "%s: %d requests, %d sent, %d cache hits in %.1f s",
            what,
            n,
            self.sent - sent0,
            self.hits - hits0,
            time.time() - t0,
        )
        return [a if a is not None else "" for a in answers]
