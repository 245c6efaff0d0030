import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokensafe.runtime import launch


def record(**kwargs):
    record.calls.append(kwargs)


record.calls = []


def test_zero_or_one_gpu_runs_in_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    record.calls.clear()
    launch.run_stage("test_launch:record", {"x": 1}, n_gpus=1)
    launch.run_stage("test_launch:record", {"x": 2}, n_gpus=0)
    assert record.calls == [{"x": 1}, {"x": 2}]


def test_several_gpus_launch_data_parallel(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        seen["spec"] = json.load(open(cmd[-1]))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    launch.run_stage("tokensafe.stages.finetune:run_finetune", {"method": "sft"}, n_gpus=4)
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    assert cmd[cmd.index("--num_processes") + 1] == "4"
    assert cmd[-3:-1] == ["-m", "tokensafe.runtime.launch"]
    assert seen["spec"] == {
        "target": "tokensafe.stages.finetune:run_finetune",
        "kwargs": {"method": "sft"},
        "log": False,
    }


def test_inside_a_launched_process_runs_directly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    record.calls.clear()
    launch.run_stage("test_launch:record", {"x": 3}, n_gpus=4)
    assert record.calls == [{"x": 3}]


def test_rank_zero_is_main(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert not launch.is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert launch.is_main_process()


def spawn_child(out: str) -> None:
    """Start a child with multiprocessing's spawn method, as vLLM's engine core does, and record its answer."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    child = ctx.Process(target=_answer, args=(q,))
    child.start()
    child.join(60)
    if child.exitcode != 0:
        raise RuntimeError(f"the spawned child exited with status {child.exitcode}")
    Path(out).write_text(q.get(timeout=5))


def _answer(q) -> None:
    q.put("spawned")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}


def test_another_interpreter_runs_the_stage_under_the_spawn_guard(tmp_path, monkeypatch):
    """generation.vllm.python: the stage runs in that interpreter via `-m tokensafe.runtime.launch`, whose
    __main__ guard lets a spawned child start (vLLM's engine core is one)."""
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    out = tmp_path / "answer.txt"
    launch.run_stage("test_launch:spawn_child", {"out": str(out)}, n_gpus=0, python=sys.executable)
    assert out.read_text() == "spawned"


def test_a_script_without_the_guard_cannot_spawn(tmp_path):
    """What Snakemake's script runner does (module-level code, no __main__ guard) fails as vLLM does in it."""
    script = tmp_path / "script.py"
    script.write_text(f"from test_launch import spawn_child\nspawn_child({str(tmp_path / 'x.txt')!r})\n")
    proc = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "bootstrapping phase" in proc.stderr
    assert not (tmp_path / "x.txt").exists()


def fail() -> None:
    raise ValueError("stage broke")


def test_a_failing_stage_in_another_interpreter_fails_the_job(monkeypatch, capfd):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    with pytest.raises(SystemExit, match=r"test_launch:fail failed in .* \(exit status 1"):
        launch.run_stage("test_launch:fail", {}, n_gpus=0, python=sys.executable)
    assert "ValueError: stage broke" in capfd.readouterr().err


def say(words: str) -> None:
    import logging

    logging.getLogger("tokensafe").info("stage says %s", words)
    print("and prints", words)


def test_a_stage_in_another_interpreter_logs_into_the_jobs_log(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    log = tmp_path / "job.log"
    log.write_text("the job's first line\n")
    launch.run_stage("test_launch:say", {"words": "hello"}, n_gpus=0, python=sys.executable, log=str(log))
    lines = log.read_text().splitlines()
    assert lines[0] == "the job's first line"  # appended, not replaced
    assert any(ln.endswith("INFO stage says hello") for ln in lines) and "and prints hello" in lines
