"""The real vLLM engine (.venv-vllm, `make vllm`) on the micro world: generation and Llama-Guard judging through
vLLM against the transformers backend's outputs of the same run, greedy and fp32.

Skipped, with the reason, only where the vLLM environment is missing (`make test` builds it where it can).
"""

import copy
import json
import re
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tokensafe.eval.generation.vllm_backend import vllm_env_problem

from workflow_utils import REPO, micro_config, planned_jobs, snakemake, write_config

VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
PROBLEM = vllm_env_problem(str(VLLM_PYTHON), ".venv-vllm/bin/python")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(PROBLEM is not None, reason=f"{PROBLEM} (run `make vllm`)")]

RUNS = ["initial/s1", "sft/p0.0/s1", "sft/p0.1/s1"]
# P(unsafe): transformers normalises the verdict tokens' probabilities from the full softmax at the first
# non-whitespace verdict step, vLLM renormalises the log-probabilities of a one-token request restricted to those
# tokens at the same step; both fp32, they differ by rounding only (4.9e-8 at most, measured on this world).
P_TOL = 1e-6


def vllm_config(cfg: dict) -> dict:
    c = copy.deepcopy(cfg)
    c["generation"]["backend"] = "vllm"
    return c


@pytest.fixture(scope="module")
def runs(micro_run, tmp_path_factory):
    """The finished micro run (transformers), and a copy of it switched to generation.backend: vllm and rerun."""
    cfg = micro_config()
    ours = micro_run("e2e", cfg)
    theirs = tmp_path_factory.mktemp("vllm")
    for name in ("results", ".snakemake"):  # outputs and their metadata: the copy plans only what vLLM changes
        shutil.copytree(ours / name, theirs / name, symlinks=True)
    configfile = write_config(vllm_config(cfg), theirs)
    plan = planned_jobs(theirs, configfile)
    snakemake(theirs, configfile, "--cores", "2")
    return ours, theirs, plan, configfile


def test_switching_the_backend_reruns_generation_and_judging_only(runs):
    _, theirs, plan, configfile = runs
    # (the LLM judge reads the generations; lm-eval generates its own answers, with its own backend setting)
    assert plan == {"generate": 3, "judge": 3, "llm_rubrics": 3, "llm_win_rate": 2, "summary": 1, "report": 1, "all": 1}
    assert planned_jobs(theirs, configfile) == {}  # and then nothing is left to do


def test_the_engine_and_the_stage_log_into_the_jobs_log(runs):
    _, theirs, _, _ = runs
    for rule, run in (("generate", "sft/p0.1/s1"), ("judge", "sft/p0.1/s1")):
        text = (theirs / "logs" / rule / f"{run}.log").read_text()
        assert "Loading weights took" in text  # vLLM's own log, from the vLLM interpreter
    gen = (theirs / "logs" / "generate" / "sft" / "p0.1" / "s1.log").read_text()
    assert re.search(r"INFO generated \d+ harmful and \d+ task responses", gen)  # the stage's, from there too


def test_vllm_generations_are_the_transformers_generations(runs):
    ours, theirs, _, _ = runs
    for run in RUNS:
        a = pd.read_parquet(ours / "results" / "runs" / run / "generations.parquet")
        b = pd.read_parquet(theirs / "results" / "runs" / run / "generations.parquet")
        assert len(a) == len(b) > 0
        pd.testing.assert_frame_equal(a, b)  # every response, harmful and task prompts, identical
        meta = json.loads(
            pq.read_schema(theirs / "results" / "runs" / run / "generations.parquet").metadata[b"tokensafe"]
        )
        assert meta["generation"]["backend"] == "vllm" and meta["generation"]["vllm"]["dtype"] == "auto"
        assert "python" not in meta["generation"]["vllm"]  # which interpreter ran it is not a setting


def test_vllm_guard_verdicts_are_the_transformers_verdicts(runs):
    ours, theirs, _, _ = runs
    for run in RUNS:
        a = pd.read_parquet(ours / "results" / "runs" / run / "judgments.parquet")
        b = pd.read_parquet(theirs / "results" / "runs" / run / "judgments.parquet")
        assert (a.prompt_id == b.prompt_id).all()
        assert a.guard_verdict.tolist() == b.guard_verdict.tolist()
        assert a.guard_raw.tolist() == b.guard_raw.tolist()
        assert a.keyword_refusal.tolist() == b.keyword_refusal.tolist()
        assert b.guard_p_unsafe.notna().all()
        assert (a.guard_p_unsafe - b.guard_p_unsafe).abs().max() <= P_TOL
        meta = json.loads(
            pq.read_schema(theirs / "results" / "runs" / run / "judgments.parquet").metadata[b"tokensafe"]
        )
        assert meta["judge"]["backend"] == "vllm"


def test_the_summary_rows_agree_apart_from_the_judge_backend(runs):
    ours, theirs, _, _ = runs
    cols = ["method", "poison_ratio", "seed", "accuracy", "asr_keyword", "asr_guard"]
    a = pd.read_csv(ours / "results" / "summary.csv")[cols]
    b = pd.read_csv(theirs / "results" / "summary.csv")[cols]
    pd.testing.assert_frame_equal(a, b)


def test_a_missing_vllm_environment_stops_before_any_job(runs, tmp_path):
    _, theirs, _, _ = runs
    cfg = vllm_config(micro_config())
    cfg["generation"]["vllm"]["python"] = "no-such-env/bin/python"
    proc = snakemake(theirs, write_config(cfg, tmp_path), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "generation.vllm.python = 'no-such-env/bin/python' does not exist" in out
    assert "make vllm" in out


@pytest.fixture(scope="module")
def shared(micro_run, tmp_path_factory):
    """The micro run switched to vLLM with one engine for every generate job (generation.vllm.engine: shared)."""
    cfg = micro_config()
    ours = micro_run("e2e", cfg)
    theirs = tmp_path_factory.mktemp("vllm_shared")
    for name in ("results", ".snakemake"):
        shutil.copytree(ours / name, theirs / name, symlinks=True)
    c = vllm_config(cfg)
    c["generation"]["vllm"]["engine"] = "shared"
    # The engine serves generate jobs only; the vLLM guard (one engine per judge job either way) is checked on `runs`,
    # so here the guard judges with transformers, and the fixture pays for the shared engine alone.
    c["judge"]["guard"]["backend"] = "transformers"
    configfile = write_config(c, theirs)
    snakemake(theirs, configfile, "--cores", "2")
    return ours, theirs, configfile


def test_a_shared_engine_writes_the_same_per_run_files(shared):
    ours, theirs, _ = shared
    for run in RUNS:
        a = pd.read_parquet(ours / "results" / "runs" / run / "generations.parquet")
        b = pd.read_parquet(theirs / "results" / "runs" / run / "generations.parquet")
        pd.testing.assert_frame_equal(a, b)


def test_one_engine_served_every_generate_job(shared):
    _, theirs, _ = shared
    logs = list((theirs / "logs" / "vllm_engine").glob("*.log"))
    assert len(logs) == 1  # one base model, one engine
    text = logs[0].read_text()
    assert text.count("ready in") == 1  # loaded once ...
    assert len([ln for ln in text.splitlines() if " prompts, adapters " in ln]) == len(RUNS)  # ... for every run


def test_with_a_shared_engine_a_changed_adapter_regenerates_only_its_run(shared):
    _, theirs, configfile = shared
    assert planned_jobs(theirs, configfile) == {}
    for f in (theirs / "results" / "runs" / "sft" / "p0.1" / "s1" / "adapter").iterdir():
        f.touch()  # a retrained adapter: newer than its run's generations
    # its generations, judgments, lm-eval scores and LLM-judge scores; sft/p0.1/s1 is the reference of initial's
    # win rate at P = 0.1, which is judged again too
    assert planned_jobs(theirs, configfile) == {
        "generate": 1,
        "judge": 1,
        "lm_eval": 1,
        "llm_rubrics": 1,
        "llm_win_rate": 1,
        "summary": 1,
        "report": 1,
        "all": 1,
    }


def test_switching_between_per_run_and_shared_reruns_nothing(runs):
    _, theirs, _, configfile = runs
    cfg = vllm_config(micro_config())
    cfg["generation"]["vllm"]["engine"] = "shared"
    assert planned_jobs(theirs, write_config(cfg, theirs, "shared.yaml")) == {}


def test_the_guard_can_judge_with_transformers_beside_vllm_generation(runs):
    """judge.guard.backend: transformers keeps vLLM generation and judges as the transformers backend does (the
    default world's guard has a head size vLLM's CPU attention refuses)."""
    _, theirs, _, _ = runs
    cfg = vllm_config(micro_config())
    cfg["judge"]["guard"]["backend"] = "transformers"
    assert planned_jobs(theirs, write_config(cfg, theirs, "judge_tf.yaml")) == {
        "judge": 3,
        "summary": 1,
        "report": 1,
        "all": 1,
    }


@pytest.fixture(scope="module")
def bench_runs(micro_run, tmp_path_factory):
    """The finished micro run, and a copy switched to utility_benchmarks.backend: vllm (lm-eval's vLLM model with
    the run's adapter as a LoRA request) and rerun."""
    cfg = micro_config()
    ours = micro_run("e2e", cfg)
    theirs = tmp_path_factory.mktemp("vllm_bench")
    for name in ("results", ".snakemake"):
        shutil.copytree(ours / name, theirs / name, symlinks=True)
    c = copy.deepcopy(cfg)
    c["utility_benchmarks"]["backend"] = "vllm"
    configfile = write_config(c, theirs)
    plan = planned_jobs(theirs, configfile)
    snakemake(theirs, configfile, "--cores", "2")
    return ours, theirs, plan


def test_lm_eval_through_vllm_scores_what_the_hf_backend_scores(bench_runs):
    """Greedy and fp32, lm-eval's vLLM model with the LoRA adapter answers as transformers + peft does: the same
    exact match per run and filter (only the backend column differs)."""
    ours, theirs, plan = bench_runs
    assert plan == {"lm_eval": 3, "summary": 1, "report": 1, "all": 1}
    a = pd.read_csv(ours / "results" / "lm_eval.csv")
    b = pd.read_csv(theirs / "results" / "lm_eval.csv")
    assert set(a.backend) == {"hf"} and set(b.backend) == {"vllm"}
    keys = ["method", "poison_ratio", "seed", "task", "metric", "filter"]
    pd.testing.assert_frame_equal(a[[*keys, "value", "n_samples"]], b[[*keys, "value", "n_samples"]])
    assert "Loading weights took" in (theirs / "logs" / "lm_eval" / "sft" / "p0.1" / "s1.log").read_text()
