"""``python -m tokensafe.plan CONFIG``: what a config costs before it is submitted (docs/cost-plan.md)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import sys
from pathlib import Path

from tokensafe.config import ConfigError, load_config_file, name_config_files, validate_against_schema


def load_plan_config(path: str | Path) -> dict:
    """A config file with the schema's defaults filled in; a schema problem raises ConfigError naming it."""
    from snakemake.utils import validate

    from tokensafe.config import SCHEMA_PATH

    config = load_config_file(path)
    problems = validate_against_schema(config, SCHEMA_PATH)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    validate(config, str(SCHEMA_PATH), set_default=True)
    return config


def read_data(config: dict) -> tuple[dict, dict, list[str]]:
    """(rows, tables, notes) of the local data files that exist in the current directory; missing ones are noted
    (the plan then uses the catalogue's sizes or the spec's limit)."""
    from tokensafe.data.sources import check_sources

    rows: dict = {}
    tables: dict = {}
    problems = check_sources(config["data"], rows, tables)
    missing = [p.split(":", 1)[0] for p in problems if "no such file" in p]
    notes = [p for p in problems if "no such file" not in p]
    if missing:
        notes.append(
            f"{', '.join(missing)}: no file in the run directory yet (make data PRESET=...): their rows are the sizes "
            "the data command writes (tokensafe.plan.jobs.CATALOG_ROWS) or the spec's limit"
        )
    return rows, tables, notes


def build(config: dict, directory: str | Path = ".") -> tuple[list, list[str]]:
    """The jobs of a config with their work, read from ``directory`` (data files, a finished data card)."""
    import json

    from tokensafe.plan.jobs import plan_jobs
    from tokensafe.plan.sizes import lengths, unknown_lm_eval_tasks

    with contextlib.chdir(directory):
        rows, tables, notes = read_data(config)
        card_path = Path("results/data/card.json")
        card = json.loads(card_path.read_text()) if card_path.is_file() else None
    lens = lengths(config, tables, card)
    notes += lens.notes
    unknown = unknown_lm_eval_tasks(config)
    if unknown:
        notes.append(f"lm-eval tasks {', '.join(unknown)}: sizes unknown to the plan, counted as 0 tokens")
    return plan_jobs(config, rows, lens), notes


def default_gpu(config: dict) -> str:
    families = [r for r in (config.get("resources") or {}).values() if isinstance(r, dict)]  # not eval_runs_per_job
    return "h100" if any(r.get("gpus", 0) > 0 for r in families) else "cpu"


def main(argv: list[str] | None = None) -> int:
    from tokensafe.plan import calibration, cost

    parser = argparse.ArgumentParser(
        prog="python -m tokensafe.plan",
        description="Print what a config costs before it runs: jobs, tokens, optimiser steps, GPU/CPU-hours and "
        "peak memory per stage family, from a throughput table (docs/cost-plan.md).",
    )
    parser.add_argument("config", nargs="?", default="config.yaml")
    parser.add_argument(
        "--gpu",
        choices=["h100", "h200", "cpu"],
        help="GPU kind of the jobs that ask for a GPU "
        "(resources.<family>.gpus); cpu: every job on CPUs (default: h100 if any family asks for "
        "a GPU, else cpu)",
    )
    parser.add_argument(
        "--throughput",
        metavar="FILE",
        help="a throughput table (e.g. a calibrated one) whose rows replace the package's",
    )
    parser.add_argument(
        "--calibrate",
        nargs="+",
        metavar="BENCHMARKS_DIR",
        help="benchmarks/ folders of finished runs of this config: fit the table's rows to them",
    )
    parser.add_argument(
        "--out",
        default="results/plan/throughput.calibrated.yaml",
        help="where --calibrate writes the fitted table (default: %(default)s)",
    )
    parser.add_argument("--machine", default=None, help="the machine the calibrated rows name (default: this host)")
    parser.add_argument(
        "--directory",
        "-d",
        default=".",
        help="run directory: data files and a finished data card are read from it (default: .)",
    )
    parser.add_argument("--jobs", action="store_true", help="also print every job's estimate and resources")
    args = parser.parse_args(argv)
    try:
        config = load_plan_config(args.config)
        jobs, notes = build(config, args.directory)
        table = cost.load_table()
        if args.throughput:
            table = cost.merged(table, cost.load_table(args.throughput))
        elif (config.get("plan") or {}).get("throughput"):
            table = cost.merged(table, cost.load_table(Path(args.directory) / config["plan"]["throughput"]))
    except (ConfigError, ValueError, FileNotFoundError) as e:
        text = str(e)
        print(text if text.startswith(f"{args.config}") else name_config_files(text, [args.config]), file=sys.stderr)
        return 1
    gpu = args.gpu or default_gpu(config)
    planner = cost.Planner(config, table, gpu)
    if args.calibrate:
        machine = args.machine or f"{platform.processor() or platform.machine()} ({platform.node()})"
        date = datetime.date.today().isoformat()
        try:
            rows, cal_notes = calibration.calibrate(planner, jobs, args.calibrate, machine, date)
        except ValueError as e:
            print(f"--calibrate: {e}", file=sys.stderr)
            return 1
        notes += cal_notes
        header = (
            f"Throughput fitted by python -m tokensafe.plan {args.config} --calibrate "
            f"{' '.join(args.calibrate)}\non {machine}, {date}. Reuse: --throughput {args.out}"
        )
        calibration.write_table(rows, args.out, header)
        notes.append(f"calibrated {len(rows)} rows from {', '.join(args.calibrate)}: written to {args.out}")
        planner = cost.Planner(config, cost.merged(table, rows), gpu)
    estimates = [planner.estimate(j) for j in jobs]
    summary = cost.summarise(estimates)
    print(f"{args.config}: {len(jobs)} jobs, planned for {gpu}")
    print(cost.format_plan(summary, gpu))
    dom = cost.dominant(summary, gpu)
    print("dominant: " + ", ".join(f"{f} ({x:.0%})" for f, x in dom))
    total = summary[-1]
    if total["unmeasured"]:
        print(
            f"UNMEASURED: the estimates of {', '.join(total['unmeasured'])} rely on unmeasured table rows "
            "(estimates from FLOPs, bandwidth or published figures: docs/cost-plan.md); calibrate them with "
            "--calibrate BENCHMARKS_DIR after a run, or bench/gpu_calibration.py on the GPU"
        )
    else:
        print("every estimate that has a table row comes from a measured row")
    if total["missing"]:
        print(f"no table row (counted as 0 hours) for: {', '.join(total['missing'])}")
    for line in notes + cost.resource_notes(estimates, config):
        print(f"note: {line}")
    if args.jobs:
        print(cost.format_jobs(estimates, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
