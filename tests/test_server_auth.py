"""The servers a run starts are its user's alone: the local LLM-judge server answers only requests that carry the
run's key, kept in a private state folder (tokensafe.eval.llm_judge.judge_server,
tokensafe.eval.llm_judge.openai_server, tokensafe.runtime.httpkey), and the shared vLLM engine listens in a private
per-user folder and refuses peers of another uid (tokensafe.eval.generation.vllm_server). A real `transformers serve`
is started once; the engine is the real socket server in front of a stand-in engine (vLLM itself is
tests/test_vllm_engine.py's)."""

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tokensafe.eval.generation import vllm_server
from tokensafe.eval.llm_judge import judge_server, openai_server
from tokensafe.eval.llm_judge.judge_client import JudgeClient
from tokensafe.eval.llm_judge.openai_server import OpenAIServer
from tokensafe.runtime import httpkey, jobsocket

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user (uid 65534) needs root")
NO_PEERCRED = pytest.mark.skipif(not hasattr(socket, "SO_PEERCRED"), reason="SO_PEERCRED is Linux-only")
from other_user import as_nobody  # noqa: E402

SERVE_MISSING = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class loose_umask:
    def __enter__(self):
        self.old = os.umask(0o002)

    def __exit__(self, *exc):
        os.umask(self.old)


# ---------------------------------------------------------------------------------------------- judge: state folder


def test_the_judge_state_folder_and_its_key_are_private_under_a_loose_umask(tmp_path):
    with loose_umask():
        made = judge_server.new_state_dir()  # what onstart makes
        named = tmp_path / "named"  # a folder named by hand in the environment, made by the first job
        key_file = judge_server._state_key(str(named))
    try:
        for folder in (Path(made), named):
            assert mode(folder) == 0o700 and folder.stat().st_uid == os.geteuid()
            key = folder / jobsocket.SECRET_NAME
            assert mode(key) == 0o600 and key.stat().st_uid == os.geteuid()
            assert len(key.read_text()) == 64 and int(key.read_text(), 16) >= 0
            assert list(folder.iterdir()) == [key]  # no half-written key left beside it
        assert key_file == str(named / jobsocket.SECRET_NAME)
        assert judge_server._state_key(str(named)) == key_file and (named / "secret").read_text() == key.read_text()
        assert (Path(made) / "secret").read_text() != (named / "secret").read_text()  # a key per run
    finally:
        judge_server.stop_all(made)
    assert not os.path.exists(made)


def _not_private(kind: str, tmp_path: Path) -> Path:
    folder = tmp_path / kind
    if kind == "open":
        folder.mkdir()
        os.chmod(folder, 0o755)
    elif kind == "symlink":
        (tmp_path / "target").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "target")
    else:  # another user's
        folder.mkdir(mode=0o700)
        os.chown(folder, 65534, 65534)
    return folder


@pytest.mark.parametrize("kind", ["open", "symlink", pytest.param("foreign", marks=ROOT_ONLY)])
def test_a_judge_state_folder_that_is_not_private_is_refused_before_anything_starts(kind, tmp_path, monkeypatch):
    folder = _not_private(kind, tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (folder / "x.json").write_text(json.dumps({"pid": sleeper.pid, "port": 1}))  # as a planted state file could
    monkeypatch.setenv(judge_server.ENV_DIR, str(folder))
    monkeypatch.setattr(OpenAIServer, "popen", lambda *a, **k: pytest.fail("a server was started"))
    try:
        with pytest.raises(PermissionError, match="TOKENSAFE_JUDGE_SERVERS: .* is not a private directory"):
            with judge_server.judge_endpoint("transformers", "model", sys.executable, str(tmp_path / "log"), {}):
                pytest.fail("an endpoint was handed out")
        judge_server.stop_all(str(folder))  # left alone: its state files could name any process
        assert sleeper.poll() is None and (folder / "x.json").exists()
        assert not (folder / jobsocket.SECRET_NAME).exists()
    finally:
        sleeper.kill()
        sleeper.wait()


# ---------------------------------------------------------------------------------------------- judge: the key gate


def asgi(app, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """The status ``app`` answers a GET of ``path`` with ``headers``."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": headers, "client": ("127.0.0.1", 5)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"]


def test_the_gate_refuses_requests_without_the_key_on_every_path(capfd):
    reached = []

    async def inner(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    key = "k" * 64
    gate = httpkey.BearerKeyGate(inner, key)
    wrong = [
        [],
        [(b"authorization", b"Bearer " + b"x" * 64)],
        [(b"authorization", f"Basic {key}".encode())],
        [(b"authorization", f"Bearer {key}x".encode())],
        [(b"authorization", b"Bearer ")],
    ]
    # vLLM's own key leaves paths outside /v1 open; the gate does not
    for path in ("/v1/chat/completions", "/v1/models", "/health", "/metrics", "/tokenize", "//v1/models"):
        assert [asgi(gate, path, h) for h in wrong] == [401] * len(wrong)
    assert reached == []
    assert asgi(gate, "/v1/models", [(b"Authorization", f"Bearer {key}".encode())]) == 200
    assert reached == ["/v1/models"]
    log = capfd.readouterr().err
    assert "refused a request without the run's key: GET /tokenize from 127.0.0.1:5" in log and key not in log


def test_the_gate_will_not_serve_without_a_key(monkeypatch):
    monkeypatch.delenv(httpkey.ENV_KEY, raising=False)
    with pytest.raises(RuntimeError, match="refusing to serve without one"):
        httpkey.BearerKeyGate(lambda *a: None)
    out = subprocess.run(
        [sys.executable, "-m", "tokensafe.runtime.httpkey", "serve", "model"], capture_output=True, text=True
    )
    assert out.returncode != 0 and "refusing to serve without one" in out.stderr


def test_the_servers_are_gated_and_the_key_is_never_on_a_command_line(tmp_path, monkeypatch):
    key_file = tmp_path / "secret"
    key_file.write_text("k" * 64)
    seen = {}

    def popen(command, env, **_):
        seen.update(command=command, env=env)

    monkeypatch.setattr(openai_server.subprocess, "Popen", popen)
    vllm = OpenAIServer("m", python="py", log_path=tmp_path / "log", port=8, key_file=str(key_file))
    cmd = vllm.command()
    assert cmd[cmd.index("--middleware") + 1] == httpkey.GATE == "tokensafe.runtime.httpkey.BearerKeyGate"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    tf = OpenAIServer("m", python="py", log_path=tmp_path / "log", port=8, key_file=str(key_file), kind="transformers")
    assert tf.command()[:5] == ["py", "-m", "tokensafe.runtime.httpkey", "serve", "m"]
    for srv in (vllm, tf):
        srv.popen(srv.command(), None)
        assert "k" * 64 not in " ".join(seen["command"])  # a command line is readable by every local user
        assert seen["env"][httpkey.ENV_KEY] == "k" * 64 and seen["env"]["VLLM_API_KEY"] == "k" * 64


class StandIn(BaseHTTPRequestHandler):
    """An OpenAI-compatible stand-in that answers chat completions only to ``key``."""

    key = ""
    seen: list = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        given = self.headers.get("Authorization")
        StandIn.seen.append(given)
        ok = given == f"Bearer {self.key}"
        body = {"error": "Unauthorized"}
        if ok:
            choice = {"index": 0, "message": {"role": "assistant", "content": "[[A]]"}, "finish_reason": "stop"}
            body = {"id": "1", "object": "chat.completion", "created": 0, "model": "judge", "choices": [choice]}
        data = json.dumps(body).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_the_judge_client_sends_the_key_from_its_file_and_a_wrong_key_is_refused(tmp_path):
    StandIn.key, StandIn.seen = "k" * 64, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        key_file = tmp_path / "secret"
        key_file.write_text("k" * 64 + "\n")
        cfg = {"base_url": f"http://127.0.0.1:{httpd.server_port}/v1", "model": "judge", "max_retries": 0}
        cfg.update(api_key_env=None, api_key_file=str(key_file))
        messages = [[{"role": "user", "content": "which?"}]]
        assert JudgeClient(cfg, tmp_path / "cache").complete(messages) == ["[[A]]"]
        assert StandIn.seen == ["Bearer " + "k" * 64]
        stored = next((tmp_path / "cache").rglob("*.json")).read_text()
        assert "k" * 64 not in stored and str(key_file) not in stored
        key_file.write_text("w" * 64)
        with pytest.raises(RuntimeError, match="rejected a request: AuthenticationError"):
            JudgeClient(cfg, tmp_path / "cache2").complete(messages)
        assert StandIn.seen[-1] == "Bearer " + "w" * 64
    finally:
        httpd.shutdown()


def build_model(folder: Path) -> None:
    from tokensafe.world.tokenizer import CHAT_TEMPLATE, train_tokenizer

    from tiny_models import tiny_llama

    tok = train_tokenizer(["which answer is better, a or b?"] * 8, 300)
    tok.chat_template = CHAT_TEMPLATE
    model = tiny_llama(len(tok), max_positions=256, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def post(url: str, model: str, headers: dict) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "a"}], "max_tokens": 1}
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.skipif(bool(SERVE_MISSING), reason=f"transformers serve needs {', '.join(SERVE_MISSING)}")
def test_a_shared_transformers_serve_answers_only_the_runs_key(tmp_path, monkeypatch):
    build_model(tmp_path / "model")
    state = tmp_path / "state"  # made by the first job, under a loose umask
    monkeypatch.setenv(judge_server.ENV_DIR, str(state))
    monkeypatch.setenv(judge_server.ENV_OWNER, str(os.getpid()))
    log = tmp_path / "server.log"
    try:
        with loose_umask():
            with judge_server.judge_endpoint("transformers", str(tmp_path / "model"), sys.executable, str(log), {}) as (
                base_url,
                name,
                key_file,
            ):
                assert mode(state) == 0o700 and mode(key_file) == 0o600 and Path(key_file).parent == state
                key = Path(key_file).read_text().strip()
                url = f"{base_url}/chat/completions"
                assert post(url, name, {}) == 401
                assert post(url, name, {"Authorization": "Bearer " + "0" * 64}) == 401
                assert post(url, name, {"Authorization": f"Bearer {key}"}) == 200
                cfg = {"base_url": base_url, "model": name, "api_key_env": None, "api_key_file": key_file}
                answers = JudgeClient({**cfg, "max_tokens": 2}, tmp_path / "cache").complete(
                    [[{"role": "user", "content": "a"}]]
                )
                assert len(answers) == 1 and isinstance(answers[0], str)
    finally:
        judge_server.stop_all(str(state))
    assert not state.exists()
    text = log.read_text()
    assert "refused a request without the run's key: POST /v1/chat/completions" in text and key not in text


# ---------------------------------------------------------------------------------------------- the vLLM engine


def test_the_engine_socket_lives_in_a_private_user_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with loose_umask():
        path = Path(vllm_server.socket_path("py", "model", {"dtype": "auto"}))
    assert path.parent == tmp_path / f"tokensafe-{os.geteuid()}" and mode(path.parent) == 0o700
    assert path.name.startswith("tokensafe-vllm-") and path.suffix == ".sock"


@pytest.mark.parametrize("kind", ["open", "symlink", pytest.param("foreign", marks=ROOT_ONLY)])
def test_a_user_folder_that_is_not_private_is_refused_before_an_engine_starts(kind, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = _not_private(kind, tmp_path)
    folder.rename(tmp_path / f"tokensafe-{os.geteuid()}")  # (a symlink: the link itself)
    monkeypatch.setattr(vllm_server.subprocess, "Popen", lambda *a, **k: pytest.fail("an engine was started"))
    with pytest.raises(PermissionError, match=f"tokensafe-{os.geteuid()} is not a private directory of this user"):
        vllm_server.run_shared("py", "model", {}, [], str(tmp_path / "log"))


ENGINE = """
import sys
from types import SimpleNamespace

import tokensafe.eval.generation.vllm_backend as backend


class Engine:  # stands in for vLLM: one token per prompt, its length
    def __init__(self, model, cfg, lora):
        pass

    def run(self, sets, logprobs):
        return [[SimpleNamespace(token_ids=[len(p)]) for p in s[0]] for s in sets]


backend.Engine = Engine
from tokensafe.eval.generation.vllm_server import serve

serve(sys.argv[1], "model", {}, idle_s=60, max_requests=int(sys.argv[2]) if len(sys.argv) > 2 else None)
"""


@pytest.fixture
def engine(tmp_path):
    """The engine's socket server (a stand-in engine behind it) in a private folder under the real temporary
    directory (pytest's own folders are closed to other users, which would hide what the server does)."""
    folder = tempfile.mkdtemp(prefix="tokensafe-test-")
    sock = os.path.join(folder, "tokensafe-vllm-test.sock")
    log = tmp_path / "engine.log"
    with open(log, "w") as out, loose_umask():
        proc = subprocess.Popen([sys.executable, "-c", ENGINE, sock], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not os.path.exists(sock):
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.05)
    yield sock, log
    proc.kill()
    proc.wait()
    shutil.rmtree(folder, ignore_errors=True)


REQUEST = {"sets": [[["abc", "de"], {}, None]], "logprobs": None}


@NO_PEERCRED
@ROOT_ONLY
def test_the_engine_answers_its_user_and_refuses_another(engine):
    sock, log = engine
    assert mode(sock) == 0o600 and mode(os.path.dirname(sock)) == 0o700
    assert vllm_server._send(sock, REQUEST, timeout=30) == {"outputs": [[{"token_ids": [3]}, {"token_ids": [2]}]]}
    # another user is stopped first by the private folder ...
    assert as_nobody(lambda: vllm_server._send(sock, REQUEST, timeout=30))["error"] == "PermissionError"
    # ... and, with the folder and socket opened to everyone for this test, by the peer's uid
    try:
        os.chmod(os.path.dirname(sock), 0o711)
        os.chmod(sock, 0o666)
        out = as_nobody(lambda: vllm_server._send(sock, REQUEST, timeout=30))
    finally:
        os.chmod(os.path.dirname(sock), 0o700)
        os.chmod(sock, 0o600)
    assert out.get("result") == {"refused": f"uid 65534 is not this engine's user (uid {os.geteuid()})"}, out
    time.sleep(0.3)
    text = log.read_text()
    assert f"vLLM engine: refused a request from uid 65534 pid {out['pid']}: uid 65534 is not" in text
    assert text.count(" prompts, adapters ") == 1  # only its own user's request ran


def test_an_engine_expecting_n_requests_exits_after_answering_them(tmp_path, monkeypatch):
    """In a SLURM group job the engine is told how many generate jobs the group runs, and frees the GPU after the
    last one's answer (pings and the answers before do not end it)."""
    folder = tempfile.mkdtemp(prefix="tokensafe-test-")
    sock = os.path.join(folder, "tokensafe-vllm-test.sock")
    log = tmp_path / "engine.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", ENGINE, sock, "2"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while not os.path.exists(sock):
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.05)
        assert vllm_server._ready(sock)
        assert vllm_server._send(sock, REQUEST, timeout=30) == {"outputs": [[{"token_ids": [3]}, {"token_ids": [2]}]]}
        assert vllm_server._ready(sock) and proc.poll() is None  # one of two answered: still serving
        assert "outputs" in vllm_server._send(sock, REQUEST, timeout=30)
        assert proc.wait(timeout=30) == 0
        assert not os.path.exists(sock) and "answered the 2 requests expected: exiting" in log.read_text()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
