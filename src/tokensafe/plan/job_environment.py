"""The environment every job inherits, set in the process that plans them (on SLURM each job re-reads the
Snakefile, so it sets the same): the pinned CPU code path, a fixed hash seed, and the interpreter that runs
vLLM, checked before any job (a :class:`ConfigError` naming the setting): a run that needs vLLM without it
stops at once.

vLLM pins its own torch and transformers, so it lives in an environment of its own: ``.venv-vllm`` (``make
vllm``), whose interpreter ``generation.vllm.python`` names (relative to the repository), or ``envs/vllm.yaml``
under ``--software-deployment-method conda``. Neither the interpreter nor whether the engine is shared is a
param: they rerun nothing.

Whether generate jobs share one engine (:func:`engine_mode`) is decided where the jobs' machine is known: by the
process that plans the jobs, and on a cluster again by a group job's own Snakemake (a run's evaluation:
tokensafe.plan.scheduling.EVAL_GROUP), whose jobs all run in its allocation on one node. A job's own process keeps
the mode it inherits.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from tokensafe.config import ConfigError
from tokensafe.eval.generation.vllm_backend import (
    ENV_ENGINE,
    ENV_PYTHON,
    VLLM_MISSING,
    vllm_available,
    vllm_env_problem,
)
from tokensafe.eval.generation.vllm_server import ENV_REQUESTS
from tokensafe.plan.run_settings import benchmark_backend, generation_backend, judge_backend
from tokensafe.runtime.numerics import pin_cpu_numerics
from tokensafe.runtime.preemption import ENV_CHECKPOINT, policy_of


def pin_job_environment(config: dict, environ: MutableMapping[str, str] | None = None) -> None:
    """The CPU code path of cpu_numerics (same config and seed, same bytes on the same machine: what holds across
    CPU kinds is in tokensafe.runtime.numerics) and PYTHONHASHSEED=0 (set iteration orders, e.g. the LoRA
    target_modules that peft writes to adapter_config.json, are the same in every process, the job server's
    children included). Also how often training stages save checkpoints (``checkpoint``; no param: it reruns
    nothing)."""
    env = os.environ if environ is None else environ
    pin_cpu_numerics(config["cpu_numerics"], env)
    env["PYTHONHASHSEED"] = "0"
    env[ENV_CHECKPOINT] = policy_of(config).to_env()


def vllm_users(config: dict) -> dict[str, str]:
    """The settings whose backend may be vLLM, with their backend (utility_benchmarks.backend vllm scores with
    lm-eval's vLLM model, in the same environment)."""
    return {
        "generation.backend": generation_backend(config),
        "judge.guard.backend": judge_backend(config),
        "utility_benchmarks.backend": benchmark_backend(config),
    }


def vllm_python(config: dict, basedir: str, setting: str, environ: MutableMapping[str, str] | None = None) -> str:
    """The interpreter that runs vLLM, checked, and exported (``TOKENSAFE_VLLM_PYTHON``) for the jobs: the one
    already exported, else generation.vllm.python relative to ``basedir``. ``setting`` names the key that needs
    vLLM in the error: '<setting> = vllm: <problem>. <how to get vLLM>'."""
    env = os.environ if environ is None else environ
    shown = config["generation"]["vllm"]["python"]
    python = env.get(ENV_PYTHON) or os.path.abspath(os.path.join(basedir, shown))
    problem = vllm_env_problem(python, shown)
    if problem:
        raise ConfigError(f"{setting} = vllm: {problem}. {VLLM_MISSING}")
    env[ENV_PYTHON] = python
    return python


def engine_mode(config: dict, *, main: bool, group_job: bool, inherited: str | None) -> str:
    """The engine mode this process's jobs get. One engine for every generate job (``generation.vllm.engine:
    shared``) needs the jobs on one machine: a local run, or the jobs of one group job (``group_job``: the group's
    own Snakemake on a cluster; a group runs on one node). The planning process (``main``) sets the configured mode
    while it reads the Snakefile, when its executor is not known yet; :func:`submit_remotely` turns it to
    ``per_run`` once it is a cluster's. A job's own process keeps the mode it ``inherited`` from the process that
    started it (``per_run`` without one). per_run and shared write the same bytes."""
    if main or group_job:
        return config["generation"]["vllm"]["engine"]
    return inherited or "per_run"


def submit_remotely(environ: MutableMapping[str, str] | None = None) -> None:
    """In the planning process, once its executor is known to be remote (a cluster: a job per node), before any
    job is submitted: the jobs outside group jobs use an engine each."""
    env = os.environ if environ is None else environ
    if ENV_ENGINE in env:
        env[ENV_ENGINE] = "per_run"
    env.pop(ENV_REQUESTS, None)


def prepare_vllm(
    config: dict,
    basedir: str,
    *,
    by_conda: bool,
    main: bool = True,
    group_job: bool = False,
    group_generate_jobs: int = 0,
    environ: MutableMapping[str, str] | None = None,
) -> bool:
    """Whether generation, the guard judge or lm-eval uses vLLM; if so, and vLLM is not importable here nor
    deployed by conda (``by_conda``), the interpreter that runs it (:func:`vllm_python`). Also the engine mode
    (:func:`engine_mode`: ``main`` is the planning process, ``group_job`` a group job's own process), exported for
    the jobs; a group job's own process also exports how many generate jobs it runs
    (``group_generate_jobs``): a shared engine exits once it has answered them all (tokensafe.eval.generation.
    vllm_server), so that the group's next jobs find the GPU free."""
    env = os.environ if environ is None else environ
    users = vllm_users(config)
    if "vllm" not in users.values():
        return False
    if not by_conda and not vllm_available():
        setting = next(k for k, v in users.items() if v == "vllm")  # the first setting that needs vLLM
        vllm_python(config, basedir, setting, env)
    env[ENV_ENGINE] = engine_mode(config, main=main, group_job=group_job, inherited=env.get(ENV_ENGINE))
    if group_job and group_generate_jobs:
        env[ENV_REQUESTS] = str(group_generate_jobs)
    elif main:
        env.pop(ENV_REQUESTS, None)
    return True
