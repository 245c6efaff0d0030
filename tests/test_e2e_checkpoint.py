"""A real fine-tune job (the `finetune` rule through Snakemake, on a micro world) killed midway resumes from its
checkpoint when the command is run again, and writes the uninterrupted run's adapter byte for byte: killed with
SIGKILL (Snakemake with it), stopped with SIGTERM (what SLURM sends before a preemption or the time limit), and
killed again while it writes a checkpoint. "Midway" is read from the checkpoint file, never from a fixed sleep.
The loop's own resume tests (each schedule, gradient accumulation, mid-epoch): tests/test_checkpoint.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from workflow_utils import REPO, micro_config, planned_jobs, snakemake, write_config

ADAPTER = "results/runs/sft/p0.1/s1/adapter"
CHECKPOINT = ADAPTER + ".checkpoint/state.pt"
LOG = "logs/finetune/sft/p0.1_s1.log"
STEPS = 120


def config(checkpoint: dict) -> dict:
    cfg = micro_config()
    cfg["poison_ratios"] = [0.1]
    # 60 examples in batches of 16 with 2 accumulated: 2 steps per epoch, the second on one batch (accelerate syncs
    # at the loader's end); LoRA dropout draws from torch's generator at every step.
    cfg["finetune"]["recipe"] = {"lr": 3.0e-3, "batch_size": 16, "steps": STEPS, "grad_accum": 2, "schedule": "cosine"}
    cfg["finetune"]["lora"]["dropout"] = 0.1
    cfg["checkpoint"] = checkpoint
    return cfg


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The micro world with the fine-tune done once without checkpoints: (folder, config with a checkpoint after
    every step, the uninterrupted run's adapter bytes and logged history)."""
    wd = tmp_path_factory.mktemp("ckpt")
    plain = write_config(config({"every_steps": 0, "every_minutes": 0}), wd, "plain.yaml")
    snakemake(wd, plain, "--cores", "2", ADAPTER)
    every_step = write_config(config({"every_steps": 1, "every_minutes": 0}), wd, "every_step.yaml")
    # How often a job saves changes no output: nothing reruns.
    assert planned_jobs(wd, every_step, ADAPTER) == {}
    return wd, every_step, Uninterrupted((wd / ADAPTER / "adapter_model.safetensors").read_bytes(), history(wd))


@dataclass
class Uninterrupted:
    adapter: bytes
    history: list[dict]


def history(wd: Path) -> list[dict]:
    """The logged steps of the run (training.json), without their wall times."""
    rows = json.loads((wd / ADAPTER / "training.json").read_text())["history"]
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in rows]


def start(wd: Path, cfg: Path, env: dict | None = None) -> subprocess.Popen:
    """Snakemake in a process group of its own (a SLURM job step's processes), as tests/workflow_utils.py runs it."""
    shutil.rmtree(wd / ADAPTER, ignore_errors=True)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(wd)]
    cmd += ["--configfile", str(cfg), "--cores", "2", ADAPTER]
    env = {**os.environ, **(env or {}), "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    out = open(wd / "interrupted.out", "w")
    return subprocess.Popen(
        cmd, cwd=wd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )


def saved_step(wd: Path) -> int:
    return int(torch.load(wd / CHECKPOINT, weights_only=True)["step"])


def wait_for_checkpoint(wd: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not (wd / CHECKPOINT).exists():
        assert proc.poll() is None, (wd / "interrupted.out").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint was written"
        time.sleep(0.01)


def rerun_resumes(wd: Path, cfg: Path, reference: Uninterrupted, step: int) -> None:
    assert 0 < step < STEPS  # killed midway
    assert not (wd / ADAPTER).exists()
    snakemake(wd, cfg, "--cores", "2", ADAPTER)
    assert f"resumed from checkpoint {CHECKPOINT} at step {step} of {STEPS}" in (wd / LOG).read_text()
    assert (wd / ADAPTER / "adapter_model.safetensors").read_bytes() == reference.adapter
    assert history(wd) == reference.history  # the running means across the kill too
    assert not (wd / ADAPTER).with_name("adapter.checkpoint").exists()  # removed once the adapter is saved


def test_sigkill_midway_then_rerun_gives_the_uninterrupted_adapter(world):
    """A hard kill of the whole job (Snakemake and the training process, no job server in between), as a node
    failure or SLURM's SIGKILL after KillWait."""
    wd, cfg, reference = world
    proc = start(wd, cfg, {"TOKENSAFE_JOB_SERVER": "off"})
    wait_for_checkpoint(wd, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    snakemake(wd, cfg, "--unlock")
    rerun_resumes(wd, cfg, reference, saved_step(wd))


def test_sigterm_saves_exits_and_the_rerun_resumes(world):
    """SIGTERM to every process of the run (what SLURM sends to a job step), the job running in the job server's
    child: the client forwards it there, the loop saves at the next step and exits 143; Snakemake stops gracefully."""
    wd, cfg, reference = world
    proc = start(wd, cfg)
    wait_for_checkpoint(wd, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=600) != 0
    log = (wd / LOG).read_text()
    step = saved_step(wd)
    assert f"SIGTERM: checkpoint of step {step} of {STEPS} written to {CHECKPOINT}; exiting with status 143" in log
    rerun_resumes(wd, cfg, reference, step)


# The test-only wrapper: a sitecustomize (first on PYTHONPATH) that makes the job's third checkpoint write stop
# halfway through the temporary file and SIGKILL the process, as a second kill during a preemption's save would.
DIE_IN_THIRD_WRITE = textwrap.dedent(
    """
    import os, signal
    if os.environ.get("TEST_DIE_IN_CHECKPOINT_WRITE"):
        import tokensafe.train.checkpoint as C

        writes = [0]

        def write(f, data):
            writes[0] += 1
            if writes[0] < 3:
                return f.write(data)
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        C._write_all = write
    """
)


def test_a_kill_during_the_checkpoint_write_loses_nothing(world, tmp_path):
    wd, cfg, reference = world
    (tmp_path / "sitecustomize.py").write_text(DIE_IN_THIRD_WRITE)
    env = {
        "TEST_DIE_IN_CHECKPOINT_WRITE": "1",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    proc = start(wd, cfg, env)
    assert proc.wait(timeout=600) != 0
    strays = list((wd / CHECKPOINT).parent.glob(".state.pt.tmp-*"))
    assert len(strays) == 1  # the half-written third checkpoint
    assert saved_step(wd) == 2  # the second one is whole
    rerun_resumes(wd, cfg, reference, 2)
