"""The local fork server (tokensafe.runtime.jobserver): a delegated job behaves as the same script run in its own
process - exit status, environment, working directory, thread count, standard streams, errors - and the server
runs nothing for anyone but its own user and run (tokensafe.runtime.jobsocket)."""

import json
import os
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from other_user import as_nobody

from tokensafe.runtime import jobserver, jobsocket

SCRIPT = """
from tokensafe.runtime.job import start_job
start_job(None)
import os, sys, torch
print("pid", os.getpid(), "ppid", os.getppid(), "cwd", os.getcwd(), "threads", torch.get_num_threads())
print("foo", os.environ.get("FOO"), "argv", ",".join(sys.argv[1:]))
print("child", os.environ.get("TOKENSAFE_JOB_SERVER_CHILD"))
print("to stderr", file=sys.stderr)
if os.environ.get("FAIL"):
    raise RuntimeError("stage failed on purpose")
sys.exit(int(os.environ.get("CODE", "0")))
"""


# What a foreign request asks the server to run: a marker file appears if it ever runs.
EVIL = "open({marker!r}, 'w').write('ran')\n"


def wait_for(condition, timeout=60.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("js") / "jobserver.log"
    sock = jobserver.prepare()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tokensafe.runtime.jobserver", sock, str(os.getpid())],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: os.path.exists(sock))  # it appears once the preload is done
    yield sock, proc, log
    jobserver.stop(sock)
    proc.wait(timeout=30)


def raw_request(sock: str, request=None, body: bytes | None = None) -> dict:
    """Send one request as any client could (with three descriptors, like a job) and return the reply."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(30)
    conn.connect(sock)
    data = json.dumps(request).encode() if body is None else body
    try:
        socket.send_fds(conn, [struct.pack("!I", len(data)) + data], [0, 1, 2])
    except OSError:
        pass  # refused before the server read it
    reply, _ = jobsocket.recv(conn)
    conn.close()
    return reply


def job_request(script: Path, **extra) -> dict:
    return {"script": str(script), "argv": [str(script)], "cwd": str(script.parent), "env": dict(os.environ), **extra}


def run(script, env, cwd):
    return subprocess.run(
        [sys.executable, str(script), "a", "b"],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_a_delegated_job_keeps_its_environment_cwd_threads_and_status(server, tmp_path):
    sock, proc, _ = server
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    here = run(script, {"TOKENSAFE_JOB_SERVER": "off", "OMP_NUM_THREADS": "2", "FOO": "bar", "CODE": "3"}, tmp_path)
    there = run(script, {"TOKENSAFE_JOB_SERVER": sock, "OMP_NUM_THREADS": "2", "FOO": "bar", "CODE": "3"}, tmp_path)
    assert here.returncode == there.returncode == 3

    def fields(out):
        return dict(zip(out.split()[::2], out.split()[1::2]))

    h, t = fields(here.stdout), fields(there.stdout)
    assert t["ppid"] == str(proc.pid) and h["ppid"] != str(proc.pid)  # forked by the server / run in place
    for key in ("cwd", "threads", "foo", "argv"):
        assert h[key] == t[key], key
    assert (h["threads"], h["foo"], t["child"]) == ("2", "bar", "1")
    assert "to stderr" in there.stderr


def test_an_error_in_a_delegated_job_fails_it_with_the_traceback(server, tmp_path):
    sock, _, _ = server
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    there = run(script, {"TOKENSAFE_JOB_SERVER": sock, "FAIL": "1"}, tmp_path)
    assert there.returncode == 1
    assert "RuntimeError: stage failed on purpose" in there.stderr


def test_without_a_server_the_job_runs_in_its_own_process(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    gone = run(script, {"TOKENSAFE_JOB_SERVER": str(tmp_path / "missing.sock")}, tmp_path)
    assert gone.returncode == 0 and "child None" in gone.stdout


@pytest.mark.parametrize(
    "extra, reason",
    [({}, "no secret"), ({"secret": "0" * 64}, "wrong secret"), ({"secret": ""}, "no secret")],
    ids=["none", "wrong", "empty"],
)
def test_a_request_without_the_right_secret_is_refused_and_runs_nothing(server, tmp_path, extra, reason):
    sock, _, log = server
    marker = tmp_path / "ran"
    script = tmp_path / "evil.py"
    script.write_text(EVIL.format(marker=str(marker)))
    assert raw_request(sock, job_request(script, **extra)) == {"refused": reason}
    time.sleep(0.5)  # a mistakenly forked child would have written it by now
    assert not marker.exists()
    assert f"refused a request from uid {os.geteuid()} pid {os.getpid()}: {reason}; nothing ran" in log.read_text()


def test_a_malformed_request_is_refused_and_runs_nothing(server, tmp_path):
    sock, _, log = server
    secret = jobsocket.read_secret(sock)
    marker = tmp_path / "ran"
    script = tmp_path / "evil.py"
    script.write_text(EVIL.format(marker=str(marker)))
    no_cwd = job_request(script, secret=secret)
    del no_cwd["cwd"]
    assert raw_request(sock, no_cwd) == {"refused": "malformed request (field(s) cwd)"}
    assert raw_request(sock, [str(script)]) == {"refused": "malformed request (not a JSON object)"}
    assert raw_request(sock, body=b"{not json") == {"refused": "malformed request (JSONDecodeError)"}
    time.sleep(0.5)
    assert not marker.exists()
    assert log.read_text().count("malformed request") >= 3
    assert secret not in log.read_text()


def test_a_job_with_a_wrong_secret_fails_with_a_clear_error(server, tmp_path):
    """What a job's own client does when refused: it stops with the server's reason, running nothing."""
    sock, _, _ = server
    secret_file = Path(sock).parent / jobsocket.SECRET_NAME
    secret = secret_file.read_text()
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    try:
        secret_file.write_text("1" * 64)  # the server keeps the real one in memory
        there = run(script, {"TOKENSAFE_JOB_SERVER": sock}, tmp_path)
    finally:
        secret_file.write_text(secret)
    assert there.returncode == 1 and "pid" not in there.stdout
    assert f"tokensafe job server {sock} refused this job: wrong secret" in there.stderr


@pytest.mark.skipif(not hasattr(socket, "SO_PEERCRED"), reason="SO_PEERCRED is Linux-only")
@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user (uid 65534) needs root")
def test_a_client_of_another_user_is_refused_and_runs_nothing(server, tmp_path):
    sock, _, log = server
    marker = tmp_path / "ran"
    script = tmp_path / "evil.py"
    script.write_text(EVIL.format(marker=str(marker)))
    # Even with the run's secret (as if leaked), another user is stopped first by the private directory ...
    request = job_request(script, secret=jobsocket.read_secret(sock))
    assert as_nobody(lambda: raw_request(sock, request))["error"] == "PermissionError"
    # ... and, with the directory and socket opened to everyone for this test, by the peer's uid.
    directory = os.path.dirname(sock)
    try:
        os.chmod(directory, 0o711)
        os.chmod(sock, 0o666)
        out = as_nobody(lambda: raw_request(sock, request))
    finally:
        os.chmod(directory, 0o700)
        os.chmod(sock, 0o600)
    assert out.get("result") == {"refused": f"uid 65534 is not this server's user (uid {os.geteuid()})"}, out
    time.sleep(0.5)
    assert not marker.exists()
    assert f"refused a request from uid 65534 pid {out['pid']}: uid 65534 is not" in log.read_text()


def test_the_socket_directory_is_private_under_a_loose_umask_and_removed_at_stop(tmp_path, monkeypatch):
    monkeypatch.setenv(jobserver.ENV_SOCKET, "off")  # start() sets it for the jobs; restored afterwards
    old = os.umask(0o002)
    try:
        sock = jobserver.start(str(tmp_path / "jobserver.log"))
        wait_for(lambda: os.path.exists(sock))
    finally:
        os.umask(old)
    directory = Path(sock).parent
    assert os.environ[jobserver.ENV_SOCKET] == sock
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (directory, Path(sock), directory / "secret")}
    assert modes == {directory.name: 0o700, "jobs.sock": 0o600, "secret": 0o600}
    assert {p.stat().st_uid for p in directory.iterdir()} | {directory.stat().st_uid} == {os.geteuid()}
    secret = jobsocket.read_secret(sock)
    assert len(secret) == 64 and int(secret, 16) >= 0
    jobserver.stop(sock)
    wait_for(lambda: not directory.exists(), timeout=30)
    assert "1 thread(s)" in (tmp_path / "jobserver.log").read_text()
    assert secret not in (tmp_path / "jobserver.log").read_text()


def test_a_server_refuses_a_directory_that_is_not_private(tmp_path):
    sock = tmp_path / "jobs.sock"
    (tmp_path / "secret").write_text("0" * 64)
    os.chmod(tmp_path, 0o755)
    out = subprocess.run(
        [sys.executable, "-m", "tokensafe.runtime.jobserver", str(sock)], capture_output=True, text=True, timeout=60
    )
    assert "not serving" in out.stdout and "is not a private directory of this user" in out.stdout
    assert not sock.exists() and (tmp_path / "secret").exists()  # not its directory: left alone


def test_the_server_preloads_without_starting_threads_and_removes_its_directory(server):
    sock, proc, log = server
    jobserver.stop(sock)
    proc.wait(timeout=30)
    out = log.read_text()
    assert "1 thread(s)" in out and "not serving" not in out
    assert not os.path.exists(os.path.dirname(sock))
