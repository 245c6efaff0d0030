"""Calibration of the cost plan's throughput table from a finished run: Snakemake's benchmark files
(``benchmarks/<rule>/....tsv``: wall seconds ``s``, peak ``max_rss``) paired with each job's work from the same plan
code, fitted per stage and device, written as a table file ``--throughput`` reads (docs/cost-plan.md)."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import yaml

from tokensafe.plan.cost import Estimate, Planner, size_class, stage_keys
from tokensafe.plan.jobs import Job


def read_benchmark(path: Path) -> dict | None:
    """The first data row of a Snakemake benchmark TSV: wall seconds and peak RSS (MB); None if it has none."""
    with path.open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        return None
    r = rows[0]
    rss = r.get("max_rss", "NA")
    return {"s": float(r["s"]), "max_rss": float(rss) if rss not in ("NA", "", "-") else None}


def calibrate(
    planner: Planner, jobs: list[Job], bench_dirs: list[str | Path], machine: str, date: str
) -> tuple[list[dict], list[str]]:
    """Fit a table row per (stage, device) from the benchmark files of a finished run of the same config.

    Pairs each job of ``jobs`` with ``<dir>/<its benchmark>.tsv``; per stage (finetune per method), fits the
    rate and the fixed overhead: ``seconds = overhead + work / rate`` by least squares where the jobs' work spans
    at least 1.5x, else the overhead of the table's row, or without one the median time of the run's jobs without a
    model on that device (a job's start, imports and table reads on this machine), at most half the stage's fastest
    job, and the rate from the sums.
    Peak host memory is the largest max_rss, unless the run used the local job server (its benchmark files then
    measure the launcher only, not the job: logs/jobserver.log beside benchmarks/). Returns the rows and notes."""
    notes: list[str] = []
    groups: dict[tuple[str, str], list[tuple[Estimate, dict]]] = {}
    found = 0
    for d in bench_dirs:
        d = Path(d)
        server = (d.parent / "logs" / "jobserver.log").exists()
        if server:
            notes.append(f"{d}: a local run through the job server: max_rss is the launcher's, memory not fitted")
        for job in jobs:
            if not job.benchmark:
                continue
            f = d / f"{job.benchmark}.tsv"
            if not f.is_file():
                continue
            b = read_benchmark(f)
            if b is None:
                continue
            found += 1
            if server:
                b["max_rss"] = None
            est = planner.estimate(job)
            stage = stage_keys(job, planner.config)[0]
            groups.setdefault((stage, est.device), []).append((est, b))
    if not found:
        raise ValueError(
            f"no benchmark file of this config's jobs under {', '.join(map(str, bench_dirs))} "
            "(benchmarks/<rule>/....tsv of a finished run of the same config)"
        )
    start: dict[str, float] = {}
    for device in {dev for _, dev in groups}:
        fixed = sorted(b["s"] for (_, dev), ps in groups.items() if dev == device for e, b in ps if e.job.work <= 1)
        start[device] = fixed[len(fixed) // 2] if fixed else 0.0
    rows = []
    for (stage, device), pairs in sorted(groups.items()):
        est0 = pairs[0][0]
        params = planner.model_size(est0.job)
        secs = [b["s"] for _, b in pairs]
        works = [e.job.work for e, _ in pairs]
        rss = [b["max_rss"] for _, b in pairs if b["max_rss"] is not None]
        row = {
            "stage": stage,
            "device": device,
            "size": size_class(params) if params else "any",
            "source": "measured",
            "machine": machine,
            "date": date,
            "jobs": len(pairs),
        }
        base = est0.row or {}
        fixed_cost = all(e.job.work <= 1.0 for e, _ in pairs)
        if fixed_cost:
            row["seconds"] = round(sum(secs) / len(secs), 3)
        else:
            overhead, rate = fit_rate(works, secs, float(base.get("overhead_s", start[device])))
            row.update({"tokens_per_s": round(rate, 3), "params": params, "overhead_s": round(overhead, 3)})
        if rss:
            row["host_mb"] = {"fixed": round(max(rss), 1), "per_b": 0}
        elif base.get("host_mb"):
            row["host_mb"] = base["host_mb"]
        if base.get("gpu_gb"):
            row["gpu_gb"] = base["gpu_gb"]
        rows.append(row)
    return rows, notes


def fit_rate(works: list[float], secs: list[float], overhead: float) -> tuple[float, float]:
    """(overhead seconds, work per second) with ``secs ~ overhead + works / rate``."""
    n = len(works)
    if n >= 2 and max(works) >= 1.5 * min(works):
        mw, ms = sum(works) / n, sum(secs) / n
        sxx = sum((w - mw) ** 2 for w in works)
        slope = sum((w - mw) * (s - ms) for w, s in zip(works, secs)) / sxx
        intercept = ms - slope * mw
        if slope > 0 and intercept >= 0:
            return intercept, 1.0 / slope
    overhead = min(overhead, 0.5 * min(secs))
    busy = sum(max(s - overhead, 1e-3) for s in secs)
    return overhead, sum(works) / busy


def write_table(rows: list[dict], path: str | Path, header: str) -> None:
    """A throughput table file: the header as comments, one row per line (written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += ["rows:"] + [
        "- " + yaml.safe_dump(r, default_flow_style=True, width=1_000_000, sort_keys=False).strip() for r in rows
    ]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
