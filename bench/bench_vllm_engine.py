"""vLLM generation for every run of a finished embedded sweep: an engine per generate job (per_run) against one
engine for all of them (shared). Wall time, engine start-ups and their cost, from copies of the run folder.

    .venv/bin/python bench/bench_vllm_engine.py [RUN_DIR] [SEED]   # after `make run` and `make vllm`

SEED (default 1) picks the runs of one seed (14 of the default's 31: every method and initial), to keep it short.

Only the generate jobs run (the default world's guard has a head size vLLM's CPU attention does not take).
Engine start-up per engine is read from vLLM's own log lines ("Loading weights took", "init engine ... took").
Writes bench/results/vllm_engine_cpu.json.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]


def engine_seconds(text: str) -> list[float]:
    """Per engine: weight loading plus engine initialisation (profiling, KV cache, warm-up), in seconds."""
    load = [float(x) for x in re.findall(r"Loading weights took ([0-9.]+) seconds", text)]
    init = [float(x) for x in re.findall(r"init engine \(.*?\) took ([0-9.]+) s", text)]
    return [a + b for a, b in zip(load, init)]


def run(mode: str, src: Path, work: Path, seed: int) -> dict:
    wd = work / mode
    for name in ("results", ".snakemake"):
        shutil.copytree(src / name, wd / name, symlinks=True)
    targets = sorted(
        str(Path(p).relative_to(src))
        for p in glob.glob(f"{src}/results/runs/**/generations.parquet", recursive=True)
        if f"/s{seed}/" in p
    )
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["generation"]["backend"] = "vllm"
    cfg["generation"]["vllm"]["engine"] = mode
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(wd),
        "--configfile",
        str(wd / "config.yaml"),
        "--cores",
        "2",
        "--",
        *targets,
    ]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=wd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    logs = [*(wd / "logs" / "generate").rglob("*.log"), *(wd / "logs" / "vllm_engine").glob("*.log")]
    text = proc.stdout + proc.stderr + "".join(p.read_text(errors="replace") for p in logs)
    starts = engine_seconds(text)
    same = all(pd.read_parquet(src / t).equals(pd.read_parquet(wd / t)) for t in targets)
    return {
        "mode": mode,
        "generate_jobs": len(targets),
        "wall_s": round(wall, 1),
        "engines": len(starts),
        "engine_start_s": [round(s, 2) for s in starts],
        "engine_start_s_total": round(sum(starts), 1),
        "generations_equal_transformers": same,
    }


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else REPO).resolve()
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(mode, src, Path(tmp), seed) for mode in ("per_run", "shared")]
    out = REPO / "bench" / "results" / "vllm_engine_cpu.json"
    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    source = os.path.relpath(src, REPO)  # the finished run regenerated ("." is the repository's own results)
    meta = {"source": source, "seed": seed, "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}
    out.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
