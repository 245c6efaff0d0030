import json
import subprocess

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

    def fake_run(cmd, check):
        seen["cmd"] = cmd
        seen["spec"] = json.load(open(cmd[-1]))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    launch.run_stage("tokensafe.stages.finetune:run_finetune", {"method": "sft"}, n_gpus=4)
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    assert cmd[cmd.index("--num_processes") + 1] == "4"
    assert cmd[-3:-1] == ["-m", "tokensafe.runtime.launch"]
    assert seen["spec"] == {"target": "tokensafe.stages.finetune:run_finetune", "kwargs": {"method": "sft"}}


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
