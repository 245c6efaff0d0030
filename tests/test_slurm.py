"""`snakemake --profile slurm` on a real single-node SLURM cluster (tests/slurm_cluster.py).

The micro workflow runs locally (--cores 2) in one directory and through the SLURM profile in
another, and the two summaries must be equal. To keep the module to a few minutes the SLURM side
is one pass in two runs rather than a clean run plus a failure drill: the first SLURM run has one
job that fails at run time (a hub data set that cannot be reached: the jobs run with the hub offline) and
`keep-going` finishes everything that does not depend on it; the failure must
surface with the rule, its log and the SLURM log. After the config is fixed, the plan must hold only
that job and what depends on it, and the second SLURM run completes the workflow. The local run
goes on in a thread meanwhile: the SLURM side mostly waits on status polls.

Skipped, with the reason, when SLURM is not installed (.ci/install-slurm.sh) or cannot start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from slurm_cluster import ClusterUnavailable, SlurmCluster, missing_binaries
from workflow_utils import REPO, micro_config, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slurm

PROFILE = REPO / "profiles" / "slurm"
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
HUB_TASK = {"hub": "example/none", "format": "generic", "prompt_column": "q", "response_column": "a"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"SLURM not installed ({', '.join(missing)} missing): run .ci/install-slurm.sh "
            "(Debian packages slurm-wlm, munge)"
        )
    c = SlurmCluster()
    try:
        c.start()
    except (ClusterUnavailable, OSError, subprocess.SubprocessError) as e:
        c.stop()
        pytest.skip(f"local SLURM cluster could not start: {e}")
    mp = pytest.MonkeyPatch()
    for k, v in c.env.items():
        mp.setenv(k, v)  # snakemake and its sbatch/squeue calls find the cluster
    yield c
    mp.undo()
    c.stop()


def slurm_config() -> dict:
    """The micro world with one poison ratio and small job requests that fit any test node."""
    cfg = micro_config()
    cfg["methods"] = ["sft"]
    cfg["poison_ratios"] = [0.1]
    cfg["resources"] = {
        fam: {"threads": 1, "mem_mb": 500 + 100 * i, "runtime": 10 + i, "gpus": 0}
        for i, fam in enumerate(("world", "data", "train", "generate", "judge", "report"))
    }
    return cfg


def slurm_args(cluster: SlurmCluster) -> list[str]:
    return [
        "--profile",
        str(PROFILE),
        # the test cluster's account label and partition (a real cluster sets them in the profile)
        "--default-resources",
        f"slurm_account={cluster.account}",
        f"slurm_partition={cluster.partition}",
        # no slurmdbd here: sacct cannot answer, squeue keeps finished jobs for MinJobAge
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
    ]


def queue(cluster: SlurmCluster) -> dict[str, dict]:
    """All jobs the cluster knows (finished ones included): id -> fields."""
    fields = ["id", "state", "account", "partition", "cpus", "mem", "timelimit", "comment"]
    out = cluster.run("squeue", "-h", "--states=all", "-o", "%i|%T|%a|%P|%C|%m|%l|%k").stdout
    return {row[0]: dict(zip(fields, row)) for row in (line.split("|") for line in out.splitlines() if line)}


@dataclass
class Runs:
    local: Path  # workdir of the local run
    slurm: Path  # workdir of the two SLURM runs
    cfg: dict
    failed: subprocess.CompletedProcess  # first SLURM run: data.task points at a hub data set
    rule_log: str  # logs/source_table/task.log right after the failure
    plan: dict  # dry-run plan once the config is fixed
    rerun: subprocess.CompletedProcess  # second SLURM run, fixed config
    queue: dict  # the cluster's job table after both runs


@pytest.fixture(scope="module")
def runs(cluster, micro_run, tmp_path_factory) -> Runs:
    wd = tmp_path_factory.mktemp("slurm")
    cfg = slurm_config()
    with ThreadPoolExecutor(1) as pool:
        local_done = pool.submit(micro_run, "local", cfg)  # the same config run locally, beside the cluster's jobs
        bad = json.loads(json.dumps(cfg))
        bad["data"]["task"] = HUB_TASK
        bad["models"]["embedded_on_real_data"] = True  # planned like a real run: the hub is read by the job
        # the hub offline (sbatch passes the environment on): the job fails at once, not after the hub's retries
        offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        failed = snakemake(wd, write_config(bad, wd), *slurm_args(cluster), check=False, env=offline)
        rule_log = (wd / "logs" / "source_table" / "task.log").read_text()
        good = write_config(cfg, wd)
        plan = planned_jobs(wd, good)
        rerun = snakemake(wd, good, *slurm_args(cluster), check=False)
        local = local_done.result()
    return Runs(local, wd, cfg, failed, rule_log, plan, rerun, queue(cluster))


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def test_profile_is_found_from_the_repository_root(tmp_path):
    """`snakemake --profile slurm` typed at the repository root picks up profiles/slurm."""
    write_config(slurm_config(), tmp_path)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            "slurm",
            "-n",
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Using profiles slurm and workflow specific profile profiles/default" in out
    assert "Job stats:" in out


def test_failed_slurm_job_surfaces_with_its_logs(runs):
    out = output(runs.failed)
    assert runs.failed.returncode != 0
    assert "Error in rule source_table" in out and "wildcards: source=task" in out, out[-4000:]
    assert "logs/source_table/task.log" in out
    failed = [(jid, log) for jid, log in SUBMITTED.findall(out) if "/rule_source_table/task/" in log]
    assert len(failed) == 2, out[-4000:]  # the profile's `retries: 1` resubmits it once
    assert all(runs.queue[jid]["state"] == "FAILED" for jid, _ in failed)
    jid, slurm_log = failed[-1]
    assert f"SLURM-job '{jid}' failed" in out and slurm_log in out
    assert "ConnectionError" in Path(slurm_log).read_text()  # sbatch --output of the job, kept on failure
    # keep-going: the jobs that do not need the task data ran through SLURM meanwhile
    done = {log.split("/slurm_logs/")[1].split("/")[0] for _, log in SUBMITTED.findall(out)}
    assert {"rule_world_data", "rule_world_aligned", "rule_world_guard", "rule_generate", "rule_judge"} <= done


def test_failed_job_log_holds_the_error(runs):
    assert "source hub='example/none' could not be loaded" in runs.rule_log, (
        f"logs/source_table/task.log: {runs.rule_log!r}"
    )


def test_fixed_config_plans_only_the_failed_job_and_what_follows(runs):
    assert runs.plan == {
        "source_table": 1,
        "mix_finetune_set": 1,
        "data_overlap": 1,  # reads the rebuilt task table
        "data_card": 1,  # likewise
        "finetune": 1,
        "generate": 1,
        "judge": 1,
        "lm_eval": 1,  # the retrained run's own evaluations ...
        "llm_rubrics": 1,
        "llm_win_rate": 1,  # ... and initial's win rate against it (sft is the reference)
        "summary": 1,
        "report": 1,
        "all": 1,
    }
    assert runs.rerun.returncode == 0, output(runs.rerun)[-4000:]
    rerun = [log.split("/slurm_logs/")[1].split("/")[0] for _, log in SUBMITTED.findall(output(runs.rerun))]
    assert sorted(rerun) == sorted(f"rule_{r}" for r in runs.plan if r != "all")
    assert planned_jobs(runs.slurm, runs.slurm / "config.yaml") == {}


def test_jobs_went_through_sbatch_with_the_rule_resources(runs, cluster):
    submitted = SUBMITTED.findall(output(runs.failed)) + SUBMITTED.findall(output(runs.rerun))
    ok = {jid for jid, log in submitted if runs.queue[jid]["state"] == "COMPLETED"}
    # every job but the target rule `all` ran as a SLURM job: 25 + the two failed attempts
    assert len(submitted) == 27 and len(ok) == 25
    for jid in {jid for jid, _ in submitted}:
        j = runs.queue[jid]
        assert (j["account"], j["partition"]) == (cluster.account, cluster.partition), j
    # the rules' resources (config.yaml `resources:`) became the sbatch request
    by_rule = {runs.queue[jid]["comment"].split("_wildcards_")[0]: runs.queue[jid] for jid in ok}
    for rule, family in (("rule_finetune", "train"), ("rule_world_base", "world"), ("rule_judge", "judge")):
        r = runs.cfg["resources"][family]
        j = by_rule[rule]
        assert (j["cpus"], j["mem"], j["timelimit"]) == ("1", f"{r['mem_mb']}M", f"{r['runtime']}:00"), (rule, j)


def test_slurm_and_local_summaries_are_equal(runs):
    a = pd.read_csv(runs.local / "results" / "summary.csv")
    b = pd.read_csv(runs.slurm / "results" / "summary.csv")
    assert sorted(a.method) == ["initial", "sft"]
    pd.testing.assert_frame_equal(a, b, check_exact=True)
