"""Stage-process behaviour set up by ``tokensafe.runtime.job.start_job``: the job log and the exit path."""

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_objects_are_frozen_before_interpreter_shutdown(tmp_path):
    # atexit runs handlers last-registered first: the probe, registered before start_job, sees the state
    # that the interpreter's shutdown collections will see.
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, file=sys.stderr))\n"
        "from tokensafe.runtime.job import start_job\n"
        f"start_job({str(tmp_path / 'job.log')!r}).info('done')\n"
    )
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert "frozen True" in res.stderr
    assert (tmp_path / "job.log").read_text().rstrip().endswith("INFO done")  # the log is still flushed


def test_collector_paused_for_startup_then_resumed_with_startup_objects_frozen():
    code = (
        "import gc\n"
        "from tokensafe.runtime.job import end_startup, start_job\n"
        "end_startup()\n"  # never paused: nothing happens
        "print(gc.isenabled(), gc.get_freeze_count() == 0)\n"
        "start_job(None)\n"
        "print(gc.isenabled())\n"
        "end_startup()\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 0)\n"
    )
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:3] == ["True True", "False", "True True"]


def test_loading_a_model_ends_the_startup(tmp_path):
    from tiny_models import tiny_llama

    tiny_llama(64, layers=1).save_pretrained(tmp_path)
    code = (
        "import gc\n"
        "from tokensafe.runtime.job import start_job\n"
        "start_job(None)\n"
        "from tokensafe.train.lora import load_model\n"
        "print(gc.isenabled())\n"
        f"load_model({str(tmp_path)!r})\n"
        "print(gc.isenabled())\n"
    )
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "True"]


def test_uncaught_error_lands_in_the_job_log(tmp_path):
    log = tmp_path / "job.log"
    res = _run(
        f"from tokensafe.runtime.job import start_job\nstart_job({str(log)!r})\nraise ValueError('bad column x')\n"
    )
    assert res.returncode != 0
    assert "ValueError: bad column x" in log.read_text()
