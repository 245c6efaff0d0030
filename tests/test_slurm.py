"""`snakemake --profile slurm` on a real single-node SLURM cluster (tests/slurm_cluster.py).

The micro workflow runs once locally and once through the SLURM executor; both summaries must be
equal. Then one job is made to fail at run time on the cluster: the failure must surface with the
rule and its log, and after fixing the config only that job and what depends on it is planned and
rerun through SLURM. Skipped when SLURM is not installed (.ci/install-slurm.sh) or cannot start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

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
        pytest.skip(f"SLURM not installed ({', '.join(missing)} missing): run .ci/install-slurm.sh "
                    "(Debian packages slurm-wlm, munge)")
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
    cfg["resources"] = {fam: {"threads": 1, "mem_mb": 500 + 100 * i, "runtime": 10 + i, "gpus": 0}
                        for i, fam in enumerate(("world", "data", "train", "generate", "judge", "report"))}
    return cfg


def slurm_args(cluster: SlurmCluster) -> list[str]:
    return ["--profile", str(PROFILE),
            # the test cluster's account label and partition (a real cluster sets them in the profile)
            "--default-resources", f"slurm_account={cluster.account}", f"slurm_partition={cluster.partition}",
            # no slurmdbd here: sacct cannot answer, squeue keeps finished jobs for MinJobAge
            "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2"]


def queue(cluster: SlurmCluster) -> dict[str, dict]:
    """All jobs the cluster knows (finished ones included): id -> fields."""
    fields = ["id", "state", "account", "partition", "cpus", "mem", "timelimit", "comment"]
    out = cluster.run("squeue", "-h", "--states=all", "-o", "%i|%T|%a|%P|%C|%m|%l|%k").stdout
    return {row[0]: dict(zip(fields, row)) for row in (line.split("|") for line in out.splitlines() if line)}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("local")
    snakemake(wd, write_config(slurm_config(), wd), "--cores", "2")
    return wd


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    wd = tmp_path_factory.mktemp("slurm")
    cfg = slurm_config()
    proc = snakemake(wd, write_config(cfg, wd), *slurm_args(cluster))
    return wd, cfg, proc.stdout + proc.stderr


def test_profile_is_found_from_the_repository_root(tmp_path):
    """`snakemake --profile slurm` typed at the repository root picks up profiles/slurm."""
    write_config(slurm_config(), tmp_path)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", "--directory", str(tmp_path),
                           "--configfile", str(tmp_path / "config.yaml")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Using profiles slurm and workflow specific profile profiles/default" in out
    assert "Job stats:" in out


def test_jobs_go_through_sbatch(cluster, slurm_run):
    wd, cfg, out = slurm_run
    submitted = dict(SUBMITTED.findall(out))
    jobs = queue(cluster)
    # every job but the target rule `all` is an sbatch job, and SLURM ran it to completion
    assert len(submitted) == 17, out[-3000:]
    assert set(submitted) <= set(jobs)
    for jid in submitted:
        j = jobs[jid]
        assert (j["state"], j["account"], j["partition"]) == ("COMPLETED", cluster.account, cluster.partition), j
    # per-rule resources from config.yaml's `resources:` became the sbatch request
    by_rule = {j["comment"].split("_wildcards_")[0]: j for jid, j in jobs.items() if jid in submitted}
    train = cfg["resources"]["train"]
    ft = by_rule["rule_finetune"]
    assert (ft["cpus"], ft["mem"], ft["timelimit"]) == ("1", f"{train['mem_mb']}M", f"{train['runtime']}:00"), ft
    assert by_rule["rule_world_base"]["mem"] == f"{cfg['resources']['world']['mem_mb']}M"
    assert (wd / "results" / "report.md").stat().st_size > 0


def test_slurm_and_local_summaries_are_equal(slurm_run, local_run):
    wd, _, _ = slurm_run
    a = pd.read_csv(local_run / "results" / "summary.csv")
    b = pd.read_csv(wd / "results" / "summary.csv")
    assert len(a) == 2 and sorted(a.method) == ["initial", "sft"]
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_failed_slurm_job_surfaces_and_rerun_plans_only_it(cluster, slurm_run, local_run):
    wd, cfg, _ = slurm_run
    # A hub data set passes the parse-time checks, but its job fails: `datasets` is not installed.
    bad = json.loads(json.dumps(cfg))
    bad["data"]["task"] = HUB_TASK
    proc = snakemake(wd, write_config(bad, wd, "bad.yaml"), *slurm_args(cluster), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error in rule source_table" in out, out[-4000:]
    assert "logs/source_table/task.log" in out
    failed = [(jid, log) for jid, log in SUBMITTED.findall(out) if "rule_source_table/task/" in log]
    assert failed, out[-4000:]
    assert all(queue(cluster)[jid]["state"] == "FAILED" for jid, _ in failed)
    assert f"SLURM-job '{failed[-1][0]}' failed" in out
    # the error is in the SLURM job's log (sbatch --output) and in the rule's log (checked last)
    slurm_log = failed[-1][1]
    assert slurm_log in out and "ImportError" in open(slurm_log).read()
    rule_log = (wd / "logs" / "source_table" / "task.log").read_text()

    # Fixed config: only the failed job and what depends on it is planned ...
    good = write_config(cfg, wd, "fixed.yaml")
    assert planned_jobs(wd, good) == {"source_table": 1, "mix_finetune_set": 1, "finetune": 1, "generate": 1,
                                      "judge": 1, "summary": 1, "report": 1, "all": 1}
    # ... and the rerun through SLURM succeeds with the same results as the local run
    proc = snakemake(wd, good, *slurm_args(cluster))
    assert len(SUBMITTED.findall(proc.stdout + proc.stderr)) == 7
    pd.testing.assert_frame_equal(pd.read_csv(local_run / "results" / "summary.csv"),
                                  pd.read_csv(wd / "results" / "summary.csv"), check_exact=True)
    assert planned_jobs(wd, good) == {}
    assert "needs the `datasets` package" in rule_log, f"logs/source_table/task.log lacks the error: {rule_log!r}"
