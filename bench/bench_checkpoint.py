#!/usr/bin/env python
"""Benchmark what checkpointing costs the training loop (docs/checkpoints.md): the embedded default's fine-tune
(a Llama of the world's size, hidden 128, 4 layers, vocabulary 1500; LoRA r 8 on q/v; 1000 examples of 24-64
tokens, batch 32, 70 steps) trained without checkpoints, with the default policy (every 10 minutes: only the
fingerprint is paid on a job this short), every 10 steps, and every step (the worst case). CPU time of the
training call (process_time: other jobs on the machine do not count), median over ``--repeats`` rounds that
alternate the variants; each variant's adapter is checked to be equal to the one without checkpoints.

    python bench/bench_checkpoint.py --out bench/results/checkpoint_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tokensafe.runtime.preemption import CheckpointPolicy
from tokensafe.train.batching import make_example
from tokensafe.train.checkpoint import Checkpoints
from tokensafe.train.lm_losses import lm_loss
from tokensafe.train.loop import TrainSettings, train
from tokensafe.train.lora import add_lora

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_models import tiny_llama  # noqa: E402

VARIANTS = {
    "none": None,
    "default (every 10 min)": CheckpointPolicy(0, 10.0),
    "every 10 steps": CheckpointPolicy(10, 0.0),
    "every step": CheckpointPolicy(1, 0.0),
}


def once(policy: CheckpointPolicy | None, folder: Path) -> tuple[float, dict[str, torch.Tensor], int]:
    model = add_lora(
        tiny_llama(1500, hidden=128, intermediate=256, layers=4, heads=4, max_positions=256),
        8,
        16,
        0.0,
        ["q_proj", "v_proj"],
        seed=1,
    )
    rng = np.random.default_rng(0)
    examples = [
        make_example(ids, ids) for ids in (rng.integers(1, 1500, size=rng.integers(24, 64)) for _ in range(1000))
    ]
    ck = None if policy is None else Checkpoints(folder, {"settings": "bench"}, policy)
    saves = [0]
    if ck is not None:
        save = ck.save

        def counted(*a, **k):
            saves[0] += 1
            save(*a, **k)

        ck.save = counted
    t0 = time.process_time()
    train(model, examples, lm_loss, TrainSettings(lr=3e-3, batch_size=32, steps=70, seed=1), 0, lambda *_: None, ck)
    cpu = time.process_time() - t0
    if ck is not None:
        ck.remove()
    return cpu, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, saves[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    saves: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            reference = None
            for name, policy in VARIANTS.items():
                seconds, weights, saves[name] = once(policy, Path(tmp) / "adapter.checkpoint")
                cpu[name].append(seconds)
                reference = reference or weights
                assert all(torch.equal(weights[n], reference[n]) for n in reference), name
    base = statistics.median(cpu["none"])
    rows = {
        name: {
            "cpu_s_median": round(statistics.median(s), 3),
            "cpu_s": [round(x, 3) for x in s],
            "saves": saves[name],
            "overhead_pct": round(100 * (statistics.median(s) / base - 1), 1),
        }
        for name, s in cpu.items()
    }
    for name, row in rows.items():
        print(f"{name:>24}: {row['cpu_s_median']:7.2f} s CPU ({row['overhead_pct']:+.1f} %), {row['saves']} saves")
    if args.out:
        Path(args.out).write_text(
            json.dumps({"threads": args.threads, "repeats": args.repeats, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
