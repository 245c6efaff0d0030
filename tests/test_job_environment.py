"""The environment the planning process sets for every job (tokensafe.plan.job_environment), on a dict, never on
this process's environment."""

import sys
from pathlib import Path

import pytest

from tokensafe.config import ConfigError
from tokensafe.eval.generation import vllm_backend
from tokensafe.eval.generation.vllm_backend import ENV_ENGINE, ENV_PYTHON, VLLM_MISSING
from tokensafe.eval.generation.vllm_server import ENV_REQUESTS
from tokensafe.plan import job_environment as je


def config(backend="transformers", guard="generation", bench="hf", python="no-such-env/bin/python"):
    return {
        "cpu_numerics": "avx2",
        "generation": {"backend": backend, "vllm": {"python": python, "engine": "shared"}},
        "judge": {"guard": {"backend": guard}},
        "utility_benchmarks": {"backend": bench},
    }


DEFAULT_POLICY = '{"every_minutes": 10.0, "every_steps": 0}'


def test_the_cpu_pin_the_hash_seed_and_the_checkpoint_policy():
    env = {"PYTHONHASHSEED": "random"}
    je.pin_job_environment(config(), env)
    assert env == {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2,STRICT",
        "PYTHONHASHSEED": "0",
        "TOKENSAFE_CHECKPOINT": DEFAULT_POLICY,
    }
    env = {}
    je.pin_job_environment({**config(), "cpu_numerics": "native"}, env)
    assert env == {"PYTHONHASHSEED": "0", "TOKENSAFE_CHECKPOINT": DEFAULT_POLICY}
    je.pin_job_environment({**config(), "checkpoint": {"every_steps": 2, "every_minutes": 0}}, env)
    assert env["TOKENSAFE_CHECKPOINT"] == '{"every_minutes": 0.0, "every_steps": 2}'


def test_the_schema_defaults_of_checkpoint_are_the_loops():
    """A training call outside the workflow (no TOKENSAFE_CHECKPOINT) saves as often as the config's default."""
    import yaml

    from tokensafe.runtime.preemption import CheckpointPolicy

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    default = schema["properties"]["checkpoint"]["default"]
    assert CheckpointPolicy(**default) == CheckpointPolicy()


def test_no_vllm_user_touches_nothing():
    env = {}
    assert je.prepare_vllm(config(), "/repo", by_conda=False, environ=env) is False
    assert env == {}


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        (dict(backend="vllm"), "generation.backend"),
        (dict(guard="vllm"), "judge.guard.backend"),
        (dict(bench="vllm"), "utility_benchmarks.backend"),
        (dict(backend="vllm", bench="vllm"), "generation.backend"),  # the first setting that needs vLLM
    ],
)
def test_a_missing_vllm_interpreter_names_the_setting_that_needs_it(tmp_path, monkeypatch, kwargs, setting):
    monkeypatch.setattr(je, "vllm_available", lambda: False)
    vllm_backend.vllm_env_problem.cache_clear()
    with pytest.raises(ConfigError) as err:
        je.prepare_vllm(config(**kwargs), str(tmp_path), by_conda=False, environ={})
    assert str(err.value) == (
        f"{setting} = vllm: generation.vllm.python = 'no-such-env/bin/python' does not exist. {VLLM_MISSING}"
    )


def test_conda_or_an_importable_vllm_needs_no_interpreter(monkeypatch):
    env = {}
    monkeypatch.setattr(je, "vllm_available", lambda: False)
    assert je.prepare_vllm(config(backend="vllm"), "/nowhere", by_conda=True, environ=env)
    assert env == {ENV_ENGINE: "shared"}
    monkeypatch.setattr(je, "vllm_available", lambda: True)
    env = {}
    assert je.prepare_vllm(config(backend="vllm"), "/nowhere", by_conda=False, environ=env)
    assert env == {ENV_ENGINE: "shared"}
    je.submit_remotely(env)  # on a cluster (known at onstart) one shared engine would need the jobs on one machine
    assert env == {ENV_ENGINE: "per_run"}


@pytest.mark.parametrize(
    "where, inherited, mode",
    [
        (dict(main=True, group_job=False), None, "shared"),  # the planning process (submit_remotely on a cluster)
        (dict(main=False, group_job=True), "per_run", "shared"),  # a group job's own process: one node
        (dict(main=False, group_job=False), "shared", "shared"),  # a job of a local run, or in that group
        (dict(main=False, group_job=False), "per_run", "per_run"),  # a job outside group jobs on a cluster
        (dict(main=False, group_job=False), None, "per_run"),  # nothing passed on (sbatch --export=NONE)
    ],
)
def test_the_engine_is_shared_only_by_jobs_on_one_machine(where, inherited, mode):
    assert je.engine_mode(config(), inherited=inherited, **where) == mode
    per_run = config()
    per_run["generation"]["vllm"]["engine"] = "per_run"
    configured = where["main"] or where["group_job"]
    assert je.engine_mode(per_run, inherited=inherited, **where) == ("per_run" if configured else mode)


def test_a_group_job_tells_its_engine_how_many_generate_jobs_it_runs(monkeypatch):
    monkeypatch.setattr(je, "vllm_available", lambda: True)
    env = {ENV_ENGINE: "per_run"}  # what the planning process gave the group job (sbatch passes it on)
    assert je.prepare_vllm(
        config(backend="vllm"),
        "/repo",
        by_conda=False,
        main=False,
        group_job=True,
        group_generate_jobs=3,
        environ=env,
    )
    assert env == {ENV_ENGINE: "shared", ENV_REQUESTS: "3"}
    # a planning process never passes a count on (one left in its environment is dropped)
    assert je.prepare_vllm(config(backend="vllm"), "/repo", by_conda=False, environ=env)
    assert env == {ENV_ENGINE: "shared"}
    env[ENV_REQUESTS] = "3"
    je.submit_remotely(env)
    assert env == {ENV_ENGINE: "per_run"}


def test_the_interpreter_relative_to_the_repository_is_exported(tmp_path, monkeypatch):
    monkeypatch.setattr(je, "vllm_env_problem", lambda python, shown: None)
    env = {}
    python = je.vllm_python(config(python="env/bin/python"), str(tmp_path), "judge.llm.server", env)
    assert python == str(tmp_path / "env" / "bin" / "python") and env == {ENV_PYTHON: python}
    # One already exported (by the planning process, for a SLURM job that re-reads the Snakefile) is kept.
    env = {ENV_PYTHON: sys.executable}
    assert je.vllm_python(config(), str(tmp_path), "judge.llm.server", env) == sys.executable


def test_an_interpreter_without_vllm_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(
        je, "vllm_env_problem", lambda python, shown: f"generation.vllm.python = {shown!r} cannot import vllm"
    )
    with pytest.raises(
        ConfigError, match=r"^judge.llm.server = vllm: generation.vllm.python = 'py' cannot import vllm\. "
    ):
        je.vllm_python(config(python="py"), str(tmp_path), "judge.llm.server", {})
