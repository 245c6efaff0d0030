#!/usr/bin/env python
"""GPU smoke check: replay the stages of a finished embedded run on CUDA and compare with the CPU results.

CI has no GPU, so this is not a pytest module; run it by hand on a GPU machine after `make run`:

    PYTHONPATH=src python tests/gpu_smoke.py --results results --out gpu_smoke.json

On CUDA every stage loads its models in bf16 (``dtype: auto``) and trains under accelerate's bf16 mixed
precision, the code path of a real cluster run. Each check re-runs a stage with the settings recorded in
the CPU run's outputs and compares:

* TOSS loss dump (chunked cross-entropy) with the CPU dump of the same adapter;
* PACT reference signals (both views, restricted to S) with the CPU cache;
* every method's fine-tune (``--steps`` steps; the method's own inputs: masks, reference signals,
  projectors, ...): finite losses and a saved adapter;
* generation with the CPU-trained adapters and judging (keyword + guard) against the CPU judgments.

bf16 changes the last digits, so values are compared with tolerances and greedy texts by the share that
match. Exits 1 when a stage fails or a comparison is out of tolerance; writes every number to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tokensafe.io import parquet_metadata, read_parquet

# The run every method has in the default config (method_poison_ratios: P = 0.1; seed 1).
RUN = "p0.1/s1"


def rebase(path: str, results: str) -> str:
    """A path the workflow wrote (``results/...``) inside the --results folder given here."""
    return str(Path(results, path[len("results/") :])) if path.startswith("results/") else path


def check_loss_dump(results: str, tmp: Path) -> dict:
    from tokensafe.train.loss_dumps import dump_losses

    cpu_path = f"{results}/toss/{RUN}/round0/losses_harmful.parquet"
    meta = parquet_metadata(cpu_path)
    out = tmp / "losses_harmful.parquet"
    dump_losses(
        aligned=f"{results}/world/aligned",
        adapter=meta["adapter"],
        data_path=f"{results}/data/finetune/{RUN}.parquet",
        settings=meta["settings"],
        out=str(out),
    )
    cols = ["sample_id", "position", "token_id", "loss", "is_response"]
    cpu, gpu = read_parquet(cpu_path, cols), read_parquet(str(out), cols)
    same_tokens = cpu[["sample_id", "position", "token_id"]].equals(gpu[["sample_id", "position", "token_id"]])
    resp = cpu.is_response.to_numpy()
    diff = np.abs(cpu.loss.to_numpy(np.float64) - gpu.loss.to_numpy(np.float64))[resp]
    res = {
        "tokens": len(cpu),
        "same_token_ids": bool(same_tokens),
        "finite": bool(np.isfinite(gpu.loss).all()),
        "mean_abs_diff": float(diff.mean()),
        "p99_abs_diff": float(np.quantile(diff, 0.99)),
    }
    res["ok"] = res["same_token_ids"] and res["finite"] and res["mean_abs_diff"] < 0.05
    return res


def check_pact_reference(results: str, tmp: Path) -> dict:
    from safetensors.torch import load_file

    from tokensafe.methods.pact.calibrated_reference import write_reference_signals

    settings = json.loads(Path(f"{results}/runs/pact/{RUN}/adapter/training.json").read_text())["settings"]
    out = tmp / "reference.safetensors"
    write_reference_signals(
        aligned=f"{results}/world/aligned",
        data_path=f"{results}/data/finetune/{RUN}.parquet",
        tokens_path=f"{results}/pact/safety_tokens.parquet",
        settings=settings,
        out=str(out),
    )
    cpu, gpu = load_file(f"{results}/pact/{RUN}/reference.safetensors"), load_file(str(out))
    res = {
        "positions": int(cpu["full"].shape[0]),
        "same_positions": bool(
            torch.equal(cpu["sample_id"], gpu["sample_id"]) and torch.equal(cpu["position"], gpu["position"])
        ),
    }
    for view in ("full", "post"):
        d = (cpu[view].double() - gpu[view].double()).abs()
        res[f"{view}_mean_abs_diff"] = float(d.mean())
        res[f"{view}_argmax_agreement"] = float((cpu[view].argmax(-1) == gpu[view].argmax(-1)).double().mean())
    res["ok"] = res["same_positions"] and all(res[f"{v}_argmax_agreement"] > 0.9 for v in ("full", "post"))
    return res


def check_finetunes(results: str, tmp: Path, steps: int, threads: int) -> dict:
    from tokensafe.stages.finetune import run_finetune

    out = {}
    for train_json in sorted(Path(results, "runs").glob(f"*/{RUN}/adapter/training.json")):
        method = train_json.parts[-5]
        trained = json.loads(train_json.read_text())
        settings = {**trained["settings"], "recipe": {**trained["settings"]["recipe"], "steps": steps}}
        if "inputs" not in trained:
            out[method] = {
                "ok": False,
                "error": f"{train_json} predates recorded inputs: rerun `snakemake --forcerun finetune`",
            }
            continue
        inputs = {name: rebase(path, results) for name, path in trained["inputs"].items()}
        t0 = time.time()
        try:
            run_finetune(
                method=method,
                data_path=f"{results}/data/finetune/{RUN}.parquet",
                aligned=f"{results}/world/aligned",
                settings=settings,
                out_dir=str(tmp / f"adapter_{method}"),
                inputs=inputs,
                threads=threads,
            )
            hist = json.loads((tmp / f"adapter_{method}" / "training.json").read_text())["history"]
            losses = [h["loss"] for h in hist]
            out[method] = {
                "ok": all(math.isfinite(x) for x in losses),
                "first_loss": losses[0],
                "last_loss": losses[-1],
                "seconds": round(time.time() - t0, 1),
            }
        except Exception:  # keep going: one line per method says which ones work on CUDA
            out[method] = {"ok": False, "error": traceback.format_exc(limit=3)[-1500:]}
    return out


def check_generate_judge(results: str, tmp: Path, runs: list[str], judge_cfg: dict, threads: dict) -> dict:
    from tokensafe.eval.utility.answers import accuracy, extract_number
    from tokensafe.stages.generation import run_generate
    from tokensafe.stages.safety_judging import run_judge

    def scores(gen: pd.DataFrame, judged: pd.DataFrame) -> dict:
        task = gen[gen["set"] == "task"]
        return {
            "accuracy": accuracy([extract_number(x) for x in task.response], list(task.reference.astype(str))),
            "asr_keyword": float(judged.keyword_attack_success.mean()),
            "asr_guard": float((judged.guard_verdict == "unsafe").mean()),
        }

    out = {}
    for run in runs:
        run_dir = Path(results, "runs", run)
        cpu_gen = f"{run_dir}/generations.parquet"
        gmeta = parquet_metadata(cpu_gen)
        adapter = run_dir / "adapter"
        name = run.replace("/", "_")
        gen_path, judge_path = tmp / f"{name}_gen.parquet", tmp / f"{name}_judge.parquet"
        run_generate(
            aligned=f"{results}/world/aligned",
            adapter=str(adapter) if adapter.exists() else None,
            harmful_path=f"{results}/data/harmful_eval.parquet",
            task_path=f"{results}/data/task_eval.parquet",
            gen_cfg=gmeta["generation"],
            settings=gmeta["settings"],
            out=str(gen_path),
            threads=threads["generate"],
        )
        run_judge(
            generations=str(gen_path),
            guard=f"{results}/world/guard",
            judge_cfg=judge_cfg,
            guard_ref="embedded",
            out=str(judge_path),
            threads=threads["judge"],
        )
        key = ["set", "prompt_id"]
        a = pd.read_parquet(cpu_gen).sort_values(key).reset_index(drop=True)
        b = pd.read_parquet(gen_path).sort_values(key).reset_index(drop=True)
        res = {
            "same_text_share": float((a.response == b.response).mean()),
            "cpu": scores(a, pd.read_parquet(f"{run_dir}/judgments.parquet")),
            "replay": scores(b, pd.read_parquet(judge_path)),
        }
        res["ok"] = res["same_text_share"] > 0.8
        out[run] = res
    return out


def ensure_cpu_numerics(mode: str, argv: list[str] | None) -> None:
    """On the CPU the replay is exact only under the run's own kernels (config ``cpu_numerics``), which
    torch reads when it loads: re-execute this script with them unless they are already in effect."""
    import os

    from tokensafe.runtime.numerics import CPU_NUMERICS_ENV

    want = CPU_NUMERICS_ENV[mode]
    if any(os.environ.get(k) != v for k, v in want.items()):
        os.execve(
            sys.executable,
            [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)],
            {**os.environ, **want},
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results", help="results folder of a finished embedded run (default: results)")
    ap.add_argument("--steps", type=int, default=20, help="training steps per method (default: 20)")
    ap.add_argument("--out", default="gpu_smoke.json", help="JSON report (default: gpu_smoke.json)")
    ap.add_argument(
        "--config", default="config.yaml", help="config of the run, for the judge settings (default: config.yaml)"
    )
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="run the same checks on the CPU, under the run's cpu_numerics, where the replay must be exact "
        "(to develop this script)",
    )
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu:
        ap.error("no CUDA device: this check replays the CPU run on a GPU")
    if not Path(args.results, "summary.csv").is_file():
        ap.error(f"{args.results}/summary.csv not found: run `make run` first")

    import transformers
    import yaml

    cfg = yaml.safe_load(Path(args.config).read_text())
    if args.cpu:
        ensure_cpu_numerics(cfg.get("cpu_numerics", "avx2"), argv)
    judge_cfg = cfg["judge"]
    # Each stage runs with its rule's thread count (Snakemake exports it as OMP_NUM_THREADS), and torch's
    # parallel reductions depend on it: the replay uses the same count (tokensafe.runtime.numerics).
    threads = {family: cfg["resources"].get(family, {}).get("threads", 1) for family in ("train", "generate", "judge")}
    report = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    ok = True
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, family, fn in [
            ("loss_dump", "generate", lambda: check_loss_dump(args.results, tmp)),  # toss_losses' threads
            ("pact_reference", "generate", lambda: check_pact_reference(args.results, tmp)),
            ("finetune", "train", lambda: check_finetunes(args.results, tmp, args.steps, threads["train"])),
            (
                "generate_judge",
                "generate",
                lambda: check_generate_judge(args.results, tmp, ["initial/s1", f"sft/{RUN}"], judge_cfg, threads),
            ),
        ]:
            torch.set_num_threads(threads[family])
            t0 = time.time()
            try:
                res = fn()
            except Exception:
                res = {"ok": False, "error": traceback.format_exc()[-3000:]}
            passed = res["ok"] if "ok" in res else all(v["ok"] for v in res.values())
            ok &= passed
            report[name] = {"passed": passed, "seconds": round(time.time() - t0, 1), **res}
            print(f"{'PASS' if passed else 'FAIL'} {name} ({report[name]['seconds']} s)", flush=True)
            print(json.dumps(res, indent=1, default=str), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
