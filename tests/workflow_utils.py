"""Run Snakemake on the repository's workflow from a scratch working directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def load_default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def micro_config() -> dict:
    """The default config shrunk until the whole DAG runs in about a minute (no phenomenon expected)."""
    cfg = load_default_config()
    cfg["seeds"] = [1]
    cfg["method_seeds"] = {}
    cfg["n_finetune"] = 60
    cfg["poison_ratios"] = [0.0, 0.1]
    cfg["methods"] = ["sft"]
    # One head of 32: vLLM's CPU attention takes head sizes 32, 64, 80, ... (tests/test_vllm_engine.py runs it).
    cfg["world"]["model"] = {"hidden": 32, "layers": 2, "heads": 1, "intermediate": 64, "max_positions": 160}
    cfg["world"]["guard_model"] = {"hidden": 32, "layers": 1, "heads": 1, "intermediate": 64, "max_positions": 512}
    cfg["world"]["pretrain"] = {"lr": 3.0e-3, "batch_size": 16, "steps": 20}
    cfg["world"]["align"] = {"lr": 1.0e-3, "batch_size": 16, "steps": 10}
    cfg["world"]["guard"] = {"lr": 3.0e-3, "batch_size": 8, "steps": 5}
    cfg["finetune"]["recipe"] = {"lr": 3.0e-3, "batch_size": 16, "steps": 4}
    cfg["generation"]["max_new_tokens"] = 8
    cfg["generation"]["task_max_new_tokens"] = 8
    cfg["judge"]["guard"]["max_new_tokens"] = 4
    # The LLM judge (on by default: the embedded stand-in behind `transformers serve`): a few requests per run.
    cfg["world"]["judge"] = {"lr": 3.0e-3, "batch_size": 8, "steps": 10}
    cfg["world"]["judge_data"] = {"examples": 40, "vocab_size": 400}
    cfg["judge"]["llm"]["limit"] = 3
    return cfg


def write_config(cfg: dict, workdir: Path, name: str = "config.yaml") -> Path:
    path = Path(workdir) / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(
    workdir: Path, configfile: Path, *args: str, check: bool = True, timeout: int = 1200, env: dict | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]
    if "-n" in args and _same_environment(env):
        proc = _dry_runs().run(cmd[3:], Path(workdir), env, timeout)  # tests/dryrun_server.py
        proc.args = cmd
    else:
        proc = subprocess.run(
            cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


# Variables that differ between the tests of one session without changing what Snakemake does.
_PER_TEST = ("PYTEST_CURRENT_TEST",)
_server = None
_server_lock = threading.Lock()


def _same_environment(env: dict) -> bool:
    """Whether a Snakemake process with ``env`` can be forked from the dry-run server: the environment (but for
    _PER_TEST) is the one the server started with, so that its imports are those a fresh process would make."""
    if os.environ.get("TOKENSAFE_TEST_DRYRUN_SERVER") == "off":
        return False
    return {k: v for k, v in env.items() if k not in _PER_TEST} == _BASE


def _environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _PER_TEST}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


_BASE = _environment()  # at import (test collection), before any test changes the environment


def _dry_runs():
    """The session's dry-run server (tests/dryrun_server.py), started on first use and closed at exit."""
    global _server
    with _server_lock:
        if _server is None:
            import atexit

            from dryrun_server import Client

            _server = Client(_BASE)
            atexit.register(_server.close)
    return _server


def planned_jobs(workdir: Path, configfile: Path, *args: str, env: dict | None = None) -> dict[str, int]:
    """Rule -> job count from a dry run's 'Job stats' table (empty when nothing is to be done)."""
    proc = snakemake(workdir, configfile, "-n", *args, env=env)
    return job_stats(proc.stdout + proc.stderr)


def job_stats(out: str) -> dict[str, int]:
    """Rule -> job count from the output of a successful dry run."""
    if "Nothing to be done" in out:
        return {}
    jobs = {}
    for line in out.split("Job stats:", 1)[1].splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        jobs[m.group(1)] = int(m.group(2))
    jobs.pop("total", None)
    return jobs
