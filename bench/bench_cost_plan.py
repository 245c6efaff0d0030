#!/usr/bin/env python
"""Does the cost plan predict a run it was not fitted on? Calibrate on the default config's run, plan a second
config that changes the work per job, run it, and compare each stage family's estimate with its measured time.

1. The default config's finished run (``--run-dir``; without it, the default runs to the end in a scratch folder):
   ``python -m tokensafe.plan --calibrate <run>/benchmarks`` fits the throughput table to its benchmark files.
2. The second config doubles the work per job: ``n_finetune`` 1000 -> 2000 (the loss dumps, PACT's reference
   logits, the aligned losses and the mixing read twice the rows; the fine-tunes keep ``finetune.recipe.steps``)
   and twice the evaluation prompts (``data.harmful_eval`` / ``data.task_eval``: files holding each embedded
   prompt twice; 200 harmful and 400 task prompts), on fewer methods and one seed to keep the run short. It starts
   from the first run's world models (copied: not rerun, not compared) and data card (the token lengths), and runs
   every other job again; each job that runs has a benchmark file and is compared.
3. Per family: the sum of the estimates of the jobs that ran vs the sum of their measured wall seconds.

Wall times on a shared machine are noisy; the script says so in its output (bench/results/cost_plan_<cpu>.md).

    python bench/bench_cost_plan.py --run-dir /tmp/default-run            # a finished default run
    python bench/bench_cost_plan.py --run-dir RUN --second-dir RUN2 --no-run   # compare a finished second run
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SECOND_METHODS = ["sft", "toss", "pact", "constrained_sft", "safety_mix"]


def snakemake(workdir: Path, configfile: Path, cores: int) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
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
        "--cores",
        str(cores),
    ]
    with (workdir / "bench_run.log").open("w") as log:
        subprocess.run(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def second_config(first: dict, workdir: Path) -> dict:
    """The default with twice n_finetune and twice the evaluation prompts (files of the world's own prompts, each
    twice), on SECOND_METHODS at one seed."""
    world = workdir / "results" / "world" / "data"
    data = workdir / "data" / "bench"
    data.mkdir(parents=True, exist_ok=True)
    for name, split, n in (
        ("task_eval", "task_test", 2),
        ("harmful_eval", "harmful_eval", 2),
        ("task", "task_train", 2),
    ):
        df = pd.read_parquet(world / f"{split}.parquet")
        cols = [c for c in ("prompt", "response", "reference") if c in df.columns]
        pd.concat([df[cols]] * n, ignore_index=True).to_json(data / f"{name}.jsonl", orient="records", lines=True)
    cfg = yaml.safe_load(yaml.safe_dump(first))
    cfg["n_finetune"] = 2 * first["n_finetune"]
    cfg["seeds"] = [1]
    cfg["poison_ratios"] = [0.0, 0.1]
    cfg["methods"] = SECOND_METHODS
    cfg["method_poison_ratios"] = {m: v for m, v in first["method_poison_ratios"].items() if m in SECOND_METHODS}
    cfg["method_seeds"] = {m: v for m, v in first["method_seeds"].items() if m in SECOND_METHODS}
    cfg["models"]["embedded_on_real_data"] = True  # the world's models on files of the world's own rows
    for role in ("task", "task_eval", "harmful_eval"):
        cfg["data"][role] = {"path": f"data/bench/{role}.jsonl", "format": "generic"}
    return cfg


def estimates(configfile: Path, workdir: Path, throughput: Path | None):
    """Per job: (rule, family, benchmark path, estimated seconds, whether its row is measured)."""
    sys.path.insert(0, str(REPO / "src"))
    from tokensafe.plan import cost
    from tokensafe.plan.__main__ import build, load_plan_config

    config = load_plan_config(configfile)
    jobs, _ = build(config, workdir)
    table = cost.load_table()
    if throughput:
        table = cost.merged(table, cost.load_table(throughput))
    planner = cost.Planner(config, table, "cpu")
    return [planner.estimate(j) for j in jobs], config, jobs


def compare(ests, bench: Path) -> pd.DataFrame:
    from tokensafe.plan.calibration import read_benchmark

    rows = []
    for e in ests:
        f = bench / f"{e.job.benchmark}.tsv"
        if not e.job.benchmark or not f.is_file():
            continue
        rows.append(
            {"family": e.job.family, "rule": e.job.rule, "estimate_s": e.seconds, "measured_s": read_benchmark(f)["s"]}
        )
    df = pd.DataFrame(rows)
    fam = (
        df.groupby("family", sort=False)
        .agg(jobs=("rule", "size"), estimate_s=("estimate_s", "sum"), measured_s=("measured_s", "sum"))
        .reset_index()
    )
    total = pd.DataFrame(
        [
            {
                "family": "total",
                "jobs": fam["jobs"].sum(),
                "estimate_s": fam["estimate_s"].sum(),
                "measured_s": fam["measured_s"].sum(),
            }
        ]
    )
    fam = pd.concat([fam, total], ignore_index=True)
    fam["error"] = fam["estimate_s"] / fam["measured_s"] - 1
    fam["within_30"] = fam["error"].abs() <= 0.30
    return fam


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, help="a finished run of config.yaml (default: run it now)")
    ap.add_argument("--second-dir", type=Path, help="where the second config runs (default: a scratch folder)")
    ap.add_argument("--no-run", action="store_true", help="the second run is finished already: only compare")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from tokensafe.runtime.numerics import cpu_name

    first_dir = args.run_dir
    if first_dir is None:
        first_dir = Path(tempfile.mkdtemp(prefix="tokensafe-plan-first-"))
        shutil.copy(REPO / "config.yaml", first_dir / "config.yaml")
        snakemake(first_dir, first_dir / "config.yaml", args.cores)
    first_cfg = first_dir / "config.yaml"
    calibrated = first_dir / "results" / "plan" / "throughput.calibrated.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tokensafe.plan",
            str(first_cfg),
            "--gpu",
            "cpu",
            "--directory",
            str(first_dir),
            "--calibrate",
            str(first_dir / "benchmarks"),
            "--out",
            str(calibrated),
            "--machine",
            cpu_name(),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    fit_ests, _, _ = estimates(first_cfg, first_dir, calibrated)
    fit = compare(fit_ests, first_dir / "benchmarks")

    second = args.second_dir or Path(tempfile.mkdtemp(prefix="tokensafe-plan-second-"))
    if not args.no_run:
        if second.exists():
            shutil.rmtree(second)
        # the world models and the data card (token lengths) of the first run; every other job runs again
        (second / "results" / "data").mkdir(parents=True)
        shutil.copytree(first_dir / "results" / "world", second / "results" / "world", symlinks=True)
        shutil.copy(first_dir / "results" / "data" / "card.json", second / "results" / "data" / "card.json")
        cfg = second_config(yaml.safe_load(first_cfg.read_text()), second)
        (second / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # The plan before the run (the data card copied from the first run gives the token lengths: the same prompts).
    ests, cfg, jobs = estimates(second / "config.yaml", second, calibrated)
    if not args.no_run:
        snakemake(second, second / "config.yaml", args.cores)
    res = compare(ests, second / "benchmarks")

    def table(df):
        lines = ["| family | jobs | estimate (s) | measured (s) | error | within 30 % |", "|---|---|---|---|---|---|"]
        for r in df.itertuples():
            lines.append(
                f"| {r.family} | {r.jobs} | {r.estimate_s:.0f} | {r.measured_s:.0f} | {r.error:+.0%} | "
                f"{'yes' if r.within_30 else 'no'} |"
            )
        return "\n".join(lines)

    cpu = cpu_name()
    text = f"""# Cost plan: estimate vs measured ({cpu})

Calibrated on the default config's run ({fit["jobs"].iloc[-1]} of its jobs had benchmark files), then
planned and run: n_finetune {cfg["n_finetune"]}, {cfg["methods"]} at seeds {cfg["seeds"]}, poison ratios
{cfg["poison_ratios"]}, evaluation prompts doubled (data.harmful_eval / data.task_eval: each embedded prompt twice).
The second run reused the first run's world models; every other job ran and is compared by its benchmark file:
wall seconds (Snakemake's `s`), summed per family. Both runs used the local job server and 2 cores, on a machine
shared with other jobs: wall times are noisy."""
    text += f"""

## Second config: estimate (calibrated on the first run) vs measured

{table(res)}

## First run: the calibrated table re-applied to the run it was fitted on (a consistency check, not a prediction)

{table(fit)}
"""
    tag = re.sub(r"[^a-z0-9]+", "_", cpu.split(",")[0].lower().replace("(r)", "")).strip("_")
    out = args.out or REPO / "bench" / "results" / f"cost_plan_{tag}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
