"""The test suite's dry-run server (tests/dryrun_server.py) plans what a fresh `python -m snakemake -n` plans."""

import os
import subprocess
import sys

from workflow_utils import REPO, job_stats, load_default_config, snakemake, write_config


def fresh(workdir, configfile):
    """The same dry run in its own process, as workflow_utils ran every dry run before the server."""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    return subprocess.run(
        [*cmd, "--configfile", str(configfile), "-n"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def test_a_served_dry_run_plans_and_refuses_as_a_fresh_process(tmp_path):
    cfg = load_default_config()
    cfg["methods"] = ["sft", "toss"]
    good = write_config(cfg, tmp_path)
    served = snakemake(tmp_path, good, "-n")
    assert served.returncode == 0 and served.args[:3] == [sys.executable, "-m", "snakemake"]
    plan = job_stats(served.stdout + served.stderr)
    own = fresh(tmp_path, good)
    assert plan["toss_mask"] == 3 and plan == job_stats(own.stdout + own.stderr)  # TOSS at P = 0.1, 3 seeds
    bad = write_config(dict(cfg, poison_ratios=[0.1, 1.2]), tmp_path, "bad.yaml")
    served, own = snakemake(tmp_path, bad, "-n", check=False), fresh(tmp_path, bad)
    assert served.returncode == own.returncode == 1
    assert "poison_ratios[1] = 1.2" in served.stdout + served.stderr
    assert (served.stdout + served.stderr).count("poison_ratios[1] = 1.2") == (own.stdout + own.stderr).count(
        "poison_ratios[1] = 1.2"
    )
