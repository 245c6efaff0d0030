"""A per-run key in front of the HTTP servers a run starts (the local LLM judge's: vLLM's API server or
``transformers serve``): a request without ``Authorization: Bearer <key>`` is answered 401 and reaches nothing.

Why a gate of our own: a loopback port is open to every local user, and neither server closes it by itself.
``transformers serve`` (5.23) has no key and no Unix-socket option; vLLM's ``--api-key`` / ``VLLM_API_KEY``
guards only its ``/v1`` routes (others, e.g. ``/tokenize``, stay open by its design). :class:`BearerKeyGate`, a
plain ASGI middleware, wraps the whole application of either: vLLM loads it with ``--middleware``; for
``transformers serve``, :func:`main` adds it to the application that ``transformers.cli.serving.server.build_server``
returns, before uvicorn starts, and refuses to serve where that function is missing. The client side checks it
too: :class:`tokensafe.eval.llm_judge.openai_server.OpenAIServer` uses a server only once a request without the key is
refused.

The key reaches the server in its environment (:data:`ENV_KEY`: a process's environment is readable by its own
user only, unlike its command line) and the clients in a 0600 file in a private directory
(:func:`tokensafe.runtime.jobsocket.private_dir`); it is never logged.
"""

from __future__ import annotations

import hmac
import os
import sys

ENV_KEY = "TOKENSAFE_SERVER_KEY"
GATE = "tokensafe.runtime.httpkey.BearerKeyGate"  # its import path, for vLLM's --middleware


def header(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


class BearerKeyGate:
    """ASGI middleware: every HTTP or WebSocket request must carry the key (compared in constant time)."""

    def __init__(self, app, key: str | None = None):
        key = os.environ.get(ENV_KEY, "") if key is None else key
        if not key:
            raise RuntimeError(f"no server key in ${ENV_KEY}: refusing to serve without one")
        self.app = app
        self._expected = f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            given = next((v for k, v in scope.get("headers") or [] if k.lower() == b"authorization"), b"")
            if not hmac.compare_digest(given, self._expected):
                client = scope.get("client") or ("?", "?")
                print(
                    f"tokensafe: refused a request without the run's key: {scope.get('method', 'WS')} "
                    f"{scope.get('path', '')} from {client[0]}:{client[1]}",
                    file=sys.stderr,
                    flush=True,
                )
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": b'{"error": "Unauthorized"}'})
                return
        await self.app(scope, receive, send)


def main(argv: list[str]) -> None:
    """``python -m tokensafe.runtime.httpkey serve <transformers serve arguments>``: ``transformers serve``
    behind :class:`BearerKeyGate` (the key from :data:`ENV_KEY`)."""
    if not argv or argv[0] != "serve":
        raise SystemExit("usage: python -m tokensafe.runtime.httpkey serve MODEL [transformers serve options]")
    BearerKeyGate(None)  # no key: stop before loading anything
    import runpy

    import transformers.cli.serving.server as serving

    build = getattr(serving, "build_server", None)
    if build is None:
        raise SystemExit(
            "transformers.cli.serving.server.build_server is missing in this transformers version: "
            "refusing to start transformers serve without the run's key"
        )

    def gated(*args, **kwargs):
        app = build(*args, **kwargs)
        app.add_middleware(BearerKeyGate)
        return app

    serving.build_server = gated  # before transformers.cli.serve looks it up
    sys.argv = ["transformers", *argv]
    runpy.run_module("transformers.cli.transformers", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
