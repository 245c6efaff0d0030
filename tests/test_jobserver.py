"""The local fork server (tokensafe.runtime.jobserver): a delegated job behaves as the same script run in its own
process - exit status, environment, working directory, thread count, standard streams, errors."""

import os
import subprocess
import sys
import time

import pytest

from tokensafe.runtime import jobserver

SCRIPT = """
from tokensafe.runtime.logs import setup
setup(None)
import os, sys, torch
print("pid", os.getpid(), "ppid", os.getppid(), "cwd", os.getcwd(), "threads", torch.get_num_threads())
print("foo", os.environ.get("FOO"), "argv", ",".join(sys.argv[1:]))
print("child", os.environ.get("TOKENSAFE_JOB_SERVER_CHILD"))
print("to stderr", file=sys.stderr)
if os.environ.get("FAIL"):
    raise RuntimeError("stage failed on purpose")
sys.exit(int(os.environ.get("CODE", "0")))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("js")
    sock = str(d / "s.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokensafe.runtime.jobserver", sock, str(os.getpid())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for _ in range(600):
        if os.path.exists(sock):  # it appears once the preload is done
            break
        time.sleep(0.05)
    yield sock, proc
    jobserver.stop(sock)
    proc.wait(timeout=30)


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
    sock, proc = server
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
    sock, _ = server
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


def test_the_server_preloads_without_starting_threads(server):
    sock, proc = server
    jobserver.stop(sock)
    out, _ = proc.communicate(timeout=30)
    assert "1 thread(s)" in out and "not serving" not in out
