"""Run a stage in-process (0 or 1 GPU), data-parallel under ``accelerate launch`` (>1 GPU), or in another Python
environment (the vLLM one).

A stage function is named as ``module:function`` and called with JSON-serialisable keyword arguments,
so the same call works from a Snakemake script and from every process ``accelerate`` starts. Inside
the function, ``accelerate`` (see ``tokensafe.train.loop``) shards the batches and syncs gradients;
only rank 0 writes outputs.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def launch_command(n_gpus: int, args_file: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(n_gpus),
        "--num_machines",
        "1",
        "--mixed_precision",
        "bf16",
        "-m",
        "tokensafe.runtime.launch",
        args_file,
    ]


def run_stage(target: str, kwargs: dict, n_gpus: int, python: str | None = None, log: str | None = None) -> None:
    """Call ``target(**kwargs)`` here, or in ``n_gpus`` data-parallel processes when ``n_gpus > 1``, or in another
    interpreter (``python``: the vLLM environment's) through this module's guarded ``main``, whose output (the
    stage's log and vLLM's) is appended to ``log``, the job's log file."""
    if python is not None:
        _run_file(target, kwargs, [python, "-m", "tokensafe.runtime.launch"], log)
        return
    if n_gpus <= 1 or "WORLD_SIZE" in os.environ:
        resolve(target)(**kwargs)
        return
    _run_file(target, kwargs, launch_command(n_gpus, "")[:-1])


def _run_file(target: str, kwargs: dict, command: list[str], log: str | None = None) -> None:
    """Run ``command ARGS.json`` with the call written to ARGS.json; its failure is this stage's."""
    from tokensafe.runtime.jobserver import ENV_SOCKET

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"target": target, "kwargs": kwargs, "log": log is not None}, f)
    env = {k: v for k, v in os.environ.items() if k != ENV_SOCKET}  # the child is no job to hand over
    try:
        if log is None:
            proc = subprocess.run([*command, f.name], env=env)
        else:
            with open(log, "a") as out:
                proc = subprocess.run([*command, f.name], env=env, stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            where = f"its log: {log}" if log else "its error is above"
            raise SystemExit(f"{target} failed in {command[0]} (exit status {proc.returncode}; {where})")
    finally:
        os.unlink(f.name)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit(
            "usage: python -m tokensafe.runtime.launch ARGS.json   (written by tokensafe.runtime.launch.run_stage)"
        )
    with open(argv[0]) as f:
        spec = json.load(f)
    if spec.get("log"):  # a stage in another interpreter: log as a stage job does, to stdout (the job's log)
        from tokensafe.runtime.job import start_job

        start_job(None)
    resolve(spec["target"])(**spec["kwargs"])


if __name__ == "__main__":
    main()
