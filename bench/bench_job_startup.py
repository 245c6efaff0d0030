#!/usr/bin/env python
"""Benchmark a stage job's start-up: the imports and model load of each rule family, in a fresh process
(how every job started before tokensafe.runtime.jobserver) and handed to the fork server (how local jobs start now).

Each family's start-up is what its stage does before its first real work: ``generate`` imports the
generation stage and loads the aligned model with an adapter, ``judge`` loads the guard, ``finetune``
imports the fine-tuning stage and adds a LoRA adapter, ``table`` (mixing, summary, report) imports
pandas and pyarrow. Needs a finished embedded run (``make run``) for the model folders. Wall time from
spawning the job's process to its exit, median of ``--repeats``; the job's own work is not included.

    python bench/bench_job_startup.py --results results --out bench/results/job_startup_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BODY = {
    "generate": "from tokensafe.stages.generation import run_generate\n"
    "from tokensafe.train.lora import load_model, load_tokenizer\n"
    "load_tokenizer('{r}/world/aligned'); load_model('{r}/world/aligned', adapter='{r}/runs/sft/p0.1/s1/adapter')\n",
    "judge": "from tokensafe.stages.safety_judging import run_judge\n"
    "from tokensafe.train.lora import load_model, load_tokenizer\n"
    "load_tokenizer('{r}/world/guard'); load_model('{r}/world/guard')\n",
    "finetune": "from tokensafe.stages.finetune import run_finetune\n"
    "from tokensafe.train.lora import add_lora, load_model\n"
    "add_lora(load_model('{r}/world/aligned'), 8, 16, 0.0, ['q_proj', 'v_proj'], 1)\n",
    "table": "import pandas, pyarrow.parquet\nfrom tokensafe.stages.summary import write_summary\n",
}


def time_job(script: Path, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(script)], env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results", help="results folder of a finished embedded run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/job_startup_cpu.json")
    args = ap.parse_args()
    from tokensafe.runtime import jobserver
    from tokensafe.runtime.numerics import cpu_name, pin_cpu_numerics

    results = str(Path(args.results).resolve())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pin_cpu_numerics("avx2", env)
    with tempfile.TemporaryDirectory() as d:
        sock = jobserver.prepare()  # the server's own private directory, removed when it stops
        server = subprocess.Popen(
            [sys.executable, "-m", "tokensafe.runtime.jobserver", sock, str(os.getpid())],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        while not os.path.exists(sock):
            time.sleep(0.05)
        scripts = {}
        for family, body in BODY.items():
            scripts[family] = Path(d, f"{family}.py")
            scripts[family].write_text(
                "from tokensafe.runtime.job import start_job\nstart_job(None)\n" + body.format(r=results)
            )
        out = {"cpu": cpu_name(), "repeats": args.repeats, "families": {}}
        for family, script in scripts.items():
            runs = {"own_process": [], "job_server": []}
            for _ in range(args.repeats):  # interleaved, so drifts of the machine's speed hit both alike
                runs["own_process"].append(time_job(script, {**env, jobserver.ENV_SOCKET: "off"}))
                runs["job_server"].append(time_job(script, {**env, jobserver.ENV_SOCKET: sock}))
            out["families"][family] = {k: round(statistics.median(v), 3) for k, v in runs.items()}
            print(family, out["families"][family], flush=True)
        jobserver.stop(sock)
        server.wait(timeout=30)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
