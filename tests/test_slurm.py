"""`snakemake --profile slurm` on a real single-node SLURM cluster (tests/slurm_cluster.py).

The micro workflow runs locally (--cores 2) in one directory and through the SLURM profile in
another, and the two summaries must be equal. To keep the module to a few minutes the SLURM side
is one pass in two runs rather than a clean run plus a failure drill: the first SLURM run has one
job that fails at run time (a hub data set that cannot be reached: the jobs run with the hub offline) and
`keep-going` finishes everything that does not depend on it; the failure must
surface with the rule, its log and the SLURM log. After the config is fixed, the plan must hold only
that job and what depends on it, and the second SLURM run completes the workflow. The local run
goes on in a thread meanwhile: the SLURM side mostly waits on status polls.

The same runs check the cluster economy (docs/slurm.md): a run's evaluation jobs are one SLURM job (a Snakemake
group), the GPU families' `gpus` reach sbatch, and the node (one GPU) never runs two GPU jobs at once; the jobs are
counted from the cluster's job completion log (`sacct -c`). A last, small SLURM run submits two fine-tunes as
one job array.

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
# a rule's job has a number, a group job a uuid
SUBMITTED = re.compile(r"Job \S+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
EVAL_RULES = {"generate", "judge", "judge_classifier", "lm_eval", "llm_rubrics", "llm_win_rate"}
# each run's evaluation group job (tokensafe.plan.scheduling.evaluation_groups), named with the rules it ran
GROUPS = {
    "initial/s1": "group_eval_initial-s1_generate_judge_llm_rubrics_llm_win_rate_lm_eval",
    "sft/p0.1/s1": "group_eval_sft-p0.1-s1_generate_judge_llm_rubrics_lm_eval",
}
GPU_FAMILIES = ("world", "train", "generate", "judge")  # one GPU each in slurm_config()
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
    """The micro world with one poison ratio and small job requests that fit any test node; the model families ask
    for one GPU each (the test node has one: tests/slurm_cluster.py), which the jobs do not use."""
    cfg = micro_config()
    cfg["methods"] = ["sft"]
    cfg["poison_ratios"] = [0.1]
    cfg["resources"] = {
        fam: {"threads": 1, "mem_mb": 500 + 100 * i, "runtime": 10 + i, "gpus": int(fam in GPU_FAMILIES)}
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
    """All jobs the cluster knows (finished ones included): id -> fields, with the GPUs asked for (`--gpus`: the
    job's TRES, 'gres:gpu:1', or 'N/A')."""
    fields = ["id", "state", "account", "partition", "cpus", "mem", "timelimit", "comment"]
    out = cluster.run("squeue", "-h", "--states=all", "-o", "%i|%T|%a|%P|%C|%m|%l|%k").stdout
    jobs = {row[0]: dict(zip(fields, row)) for row in (line.split("|") for line in out.splitlines() if line)}
    out = cluster.run("squeue", "-h", "--states=all", "-O", "JobArrayID:|,tres-per-job:|").stdout
    for line in out.splitlines():
        jid, tres = line.split("|")[:2]
        jobs[jid.strip()]["gpus"] = tres.strip()
    return jobs


def submitted(proc: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(SLURM job id, what it ran) per submission: 'rule_<rule>', or for a group job 'group_<group id>_<its rules>'
    (the plugin's log folder)."""
    return [(jid, log.split("/slurm_logs/")[1].split("/")[0]) for jid, log in SUBMITTED.findall(output(proc))]


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
    finished: dict  # the cluster's job completion log (sacct -c) after both runs


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
    return Runs(local, wd, cfg, failed, rule_log, plan, rerun, queue(cluster), cluster.finished_jobs())


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
    # keep-going: the jobs that do not need the task data ran through SLURM meanwhile ...
    done = {what for _, what in submitted(runs.failed)}
    assert {"rule_world_data", "rule_world_aligned", "rule_world_guard", "rule_world_judge"} <= done
    # ... but no evaluation: sft's needs the fine-tune, and initial's group holds its win rate against sft, so it
    # starts only once sft's group is done
    assert not [what for what in done if what.startswith("group_")], done


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
        # the evaluation of both runs: sft's follows the failed job, initial's waited in its group for sft's
        "generate": 2,
        "judge": 2,
        "lm_eval": 2,
        "llm_rubrics": 2,
        "llm_win_rate": 1,  # initial's against sft (the reference)
        "summary": 1,
        "report": 1,
        "all": 1,
    }
    assert runs.rerun.returncode == 0, output(runs.rerun)[-4000:]
    rerun = [what for _, what in submitted(runs.rerun)]
    # one SLURM job per rule outside the evaluation, one per run for its evaluation
    evaluation = list(GROUPS.values())
    assert sorted(rerun) == sorted([f"rule_{r}" for r in runs.plan if r not in EVAL_RULES | {"all"}] + evaluation)
    assert planned_jobs(runs.slurm, runs.slurm / "config.yaml") == {}


def test_jobs_went_through_sbatch_with_the_rule_resources(runs, cluster):
    jobs = submitted(runs.failed) + submitted(runs.rerun)
    ok = {jid for jid, _ in jobs if runs.queue[jid]["state"] == "COMPLETED"}
    # every job but the target rule `all` ran as a SLURM job, a run's evaluation as one: 16 rule jobs and 2 group
    # jobs, and the two failed attempts; the cluster's completion log holds the same (it has no other jobs)
    assert len(jobs) == 20 and len(ok) == 18
    assert {jid: j["state"] for jid, j in runs.finished.items()} == {jid: runs.queue[jid]["state"] for jid, _ in jobs}
    for jid in {jid for jid, _ in jobs}:
        j = runs.queue[jid]
        assert (j["account"], j["partition"]) == (cluster.account, cluster.partition), j
    # the rules' resources (config.yaml `resources:`) became the sbatch request
    by_rule = {what: runs.queue[jid] for jid, what in jobs if jid in ok}
    res = runs.cfg["resources"]
    for rule, family in (("rule_finetune", "train"), ("rule_world_base", "world")):
        j = by_rule[rule]
        assert (j["cpus"], j["mem"], j["timelimit"]) == (
            "1",
            f"{res[family]['mem_mb']}M",
            f"{res[family]['runtime']}:00",
        )
    # a group job, whose jobs run one after another, asks for its largest job's memory (the judge family's 900 MB
    # against generate's 800: lm_eval is a generate-family job, the LLM-judge jobs judge-family ones) and the sum
    # of their run times: generate 13 + lm_eval 13 + judge 14 + llm_rubrics 14, and initial's llm_win_rate 14
    gen, judge = res["generate"]["runtime"], res["judge"]["runtime"]
    for group, minutes in (
        (GROUPS["sft/p0.1/s1"], 2 * gen + 2 * judge),
        (GROUPS["initial/s1"], 2 * gen + 3 * judge),
    ):
        j = by_rule[group]
        limit = f"{minutes // 60}:{minutes % 60:02d}:00" if minutes >= 60 else f"{minutes}:00"  # squeue's [h:]mm:ss
        assert (j["cpus"], j["mem"], j["timelimit"]) == ("1", f"{res['judge']['mem_mb']}M", limit), j


def test_a_runs_evaluation_is_one_slurm_job(runs):
    """Each run's evaluation jobs (generate, the judges, lm_eval, the LLM judge) ran in one SLURM job, and only
    there: no evaluation rule was submitted on its own."""
    jobs = submitted(runs.failed) + submitted(runs.rerun)
    groups = sorted(what for _, what in jobs if what.startswith("group_"))
    assert groups == sorted(GROUPS.values())  # one per run, named with the rules it ran
    assert not [what for _, what in jobs if what.removeprefix("rule_") in EVAL_RULES]
    # the plugin's comment on the job (squeue %k) says the same
    comment = {what: runs.queue[jid]["comment"] for jid, what in jobs if what in groups}
    assert comment == {g: g.replace("group_", "rule_", 1) for g in groups}, comment
    for run in ("initial/s1", "sft/p0.1/s1"):
        for out in ("generations.parquet", "judgments.parquet", "lm_eval.parquet", "llm_rubrics.parquet"):
            assert (runs.slurm / "results" / "runs" / run / out).exists(), (run, out)


def overlap(intervals: list[tuple[str, str]]) -> int:
    """The most intervals (ISO start, end; half-open, whole seconds) that hold one instant."""
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    most = now = 0
    for _, step in events:  # at one instant an end (-1) sorts before a start
        now += step
        most = max(most, now)
    return most


def test_gpu_requests_reach_sbatch_and_the_node_runs_one_gpu_job_at_a_time(runs, cluster):
    jobs = submitted(runs.failed) + submitted(runs.rerun)
    gpu_rules = {"rule_world_base", "rule_world_aligned", "rule_world_guard", "rule_world_judge", "rule_finetune"}
    for jid, what in jobs:
        wants = what in gpu_rules or what.startswith("group_")  # families world, train, generate, judge
        assert runs.queue[jid]["gpus"] == ("gres:gpu:1" if wants else "N/A"), (what, runs.queue[jid])
    ran = {jid: runs.finished[jid] for jid, _ in jobs if runs.finished[jid]["start"] != "Unknown"}
    gpu = [(j["start"], j["end"]) for jid, j in ran.items() if runs.queue[jid]["gpus"] != "N/A"]
    assert cluster.gpus == 1 and overlap(gpu) == 1, gpu
    # the node's two CPUs did run two jobs at once: one GPU, not one CPU, kept the GPU jobs apart
    assert overlap([(j["start"], j["end"]) for j in ran.values()]) >= 2


def test_slurm_and_local_summaries_are_equal(runs):
    a = pd.read_csv(runs.local / "results" / "summary.csv")
    b = pd.read_csv(runs.slurm / "results" / "summary.csv")
    assert sorted(a.method) == ["initial", "sft"]
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_the_fine_tunes_of_a_sweep_go_out_as_one_array(runs, cluster):
    """Two more poison ratios whose fine-tuning sets are built first (locally), so that both fine-tunes are ready at
    once: `--slurm-array-jobs finetune` submits them as one `sbatch --array` of two tasks, and both adapters come
    back (the profile leaves arrays off: docs/slurm.md)."""
    cfg = json.loads(json.dumps(runs.cfg))
    cfg["poison_ratios"] = [0.1, 0.2, 0.3]
    sweep = write_config(cfg, runs.slurm, "sweep.yaml")
    snakemake(runs.slurm, sweep, "--cores", "2", "--until", "mix_finetune_set")
    args = (*slurm_args(cluster), "--until", "finetune", "--slurm-array-jobs", "finetune")
    proc = snakemake(runs.slurm, sweep, *args, check=False)
    out = output(proc)
    assert proc.returncode == 0, out[-4000:]
    array = re.findall(
        r"Submitted array job with Snakemake IDs \S+ and SLURM job ID (\d+)\. The individual task IDs are 1-2", out
    )
    assert len(array) == 1 and not submitted(proc), out[-4000:]  # one sbatch, and no fine-tune on its own
    assert {f"{array[0]}_1", f"{array[0]}_2"} <= {jid for jid, j in queue(cluster).items() if j["state"] == "COMPLETED"}
    for ratio in ("0.2", "0.3"):
        assert (runs.slurm / "results" / "runs" / "sft" / f"p{ratio}" / "s1" / "adapter").is_dir()
