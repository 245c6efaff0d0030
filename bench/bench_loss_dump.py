#!/usr/bin/env python
"""Benchmark the TOSS loss-dump pass: chunked per-token NLL vs the full-logits reference.

Each method runs in a fresh subprocess on the same randomly initialised Llama-shaped model and the
same random batch, so peak-memory numbers do not leak into each other:

* CUDA: ``torch.cuda.max_memory_allocated()`` minus the memory allocated after model + batch creation;
* CPU:  peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus the RSS after model + batch
  creation (``/proc/self/status`` VmRSS). The peak includes warm-up runs, which allocate the same.

Throughput is (batch * seq * repeats) / wall time of the timed repeats, after warm-up. The two
methods' outputs are also compared (max |difference|), so a speed-up can't come from a wrong answer.

    python bench/bench_loss_dump.py                      # tiny on CPU, llama-1b when CUDA is available
    python bench/bench_loss_dump.py --shape tiny --batch 4 --seq 256 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    # A small Llama with a realistic vocabulary: the LM head dominates, as it does at 1B scale.
    "tiny": dict(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=32000,
        tie_word_embeddings=False,
        batch=8,
        seq=512,
    ),
    # Llama-3.2-1B's shape (randomly initialised; no weights are downloaded).
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
        batch=8,
        seq=1024,
    ),
}
METHODS = ("chunked", "naive")
RESULT_TAG = "BENCH_RESULT "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Compare per_token_nll (chunked LM head + CE) with naive_token_nll (full [B,T,V] fp32 logits): "
        "throughput in tokens/s and peak memory, each method in a fresh subprocess.",
    )
    p.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default=None,
        help="model shape; default: llama-1b when CUDA is available, else tiny",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available, else cpu")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="model dtype; default: bfloat16 on cuda, float32 on cpu",
    )
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the shape's)")
    p.add_argument("--seq", type=int, default=None, help="sequence length (default: the shape's)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=1024,
        help="positions per LM-head chunk for the chunked method (default: 1024)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per method (default: 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (default: 3)")
    p.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run (default: both)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for weights and batch (default: 0)")
    p.add_argument("--out", type=Path, default=None, help="JSON output; default bench/results/loss_dump_<device>.json")
    p.add_argument("--worker", choices=METHODS, default=None, help=argparse.SUPPRESS)  # internal: one measurement
    p.add_argument(
        "--save", type=Path, default=None, help=argparse.SUPPRESS
    )  # internal: where the worker puts its output
    args = p.parse_args(argv)

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda requested but torch.cuda.is_available() is False")
    args.shape = args.shape or ("llama-1b" if args.device == "cuda" else "tiny")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    args.batch = args.batch or SHAPES[args.shape]["batch"]
    args.seq = args.seq or SHAPES[args.shape]["seq"]
    for name in ("batch", "seq", "chunk_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    args.out = args.out or Path(__file__).resolve().parent / "results" / f"loss_dump_{args.device}.json"
    return args


def _current_rss_kib() -> int:
    """Resident set size now, in KiB (Linux /proc); falls back to the peak so far elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return _peak_rss_kib()


def _peak_rss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS reports bytes, Linux KiB


def worker(args: argparse.Namespace) -> dict:
    """Build the model and batch, run one method, return its measurements."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tokensafe.train.loss_dumps import naive_token_nll, per_token_nll

    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    shape = {k: v for k, v in SHAPES[args.shape].items() if k not in ("batch", "seq")}
    cfg = LlamaConfig(**shape, max_position_embeddings=max(args.seq, 2048))
    device = torch.device(args.device)
    torch.set_default_dtype(dtype)  # initialise directly in the target dtype, on the target device
    with device:
        model = LlamaForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(args.seed))
    ids, mask = ids.to(device), torch.ones(args.batch, args.seq, dtype=torch.long, device=device)

    def run() -> "torch.Tensor":
        if args.worker == "chunked":
            return per_token_nll(model, ids, mask, chunk_size=args.chunk_size)
        return naive_token_nll(model, ids, mask)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _current_rss_kib() * 1024
    for _ in range(args.warmup):
        out = run()
    sync()
    start = time.perf_counter()
    for _ in range(args.repeats):
        out = run()
    sync()
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss_kib() * 1024) - base
    if args.save:
        torch.save(out.float().cpu(), args.save)
    return {
        "method": args.worker,
        "tokens_per_s": args.batch * args.seq * args.repeats / elapsed,
        "s_per_batch": elapsed / args.repeats,
        "peak_mem_mib": peak / 2**20,
        "mem_probe": "cuda.max_memory_allocated" if device.type == "cuda" else "ru_maxrss - VmRSS(after model)",
        "n_params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
    }


def run_worker(args: argparse.Namespace, method: str, save: Path) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--save",
        str(save),
        "--shape",
        args.shape,
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        "--chunk-size",
        str(args.chunk_size),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
        "--seed",
        str(args.seed),
        "--out",
        str(args.out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} worker failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if not lines:
        raise RuntimeError(f"{method} worker printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len(RESULT_TAG) :])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_TAG + json.dumps(worker(args)), flush=True)
        return 0

    import torch

    from tokensafe.runtime.numerics import cpu_name

    results, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            save = Path(tmp) / f"{method}.pt"
            results.append(run_worker(args, method, save))
            outputs[method] = torch.load(save)
    max_abs_diff = float((outputs["chunked"] - outputs["naive"]).abs().max()) if len(outputs) == 2 else None

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_name()
    record = {
        "benchmark": "loss_dump",
        "shape": args.shape,
        "config": {k: v for k, v in SHAPES[args.shape].items() if k not in ("batch", "seq")},
        "device": args.device,
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "dtype": args.dtype,
        "batch": args.batch,
        "seq": args.seq,
        "chunk_size": args.chunk_size,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "max_abs_diff_chunked_vs_naive": max_abs_diff,
        "results": results,
    }
    print(
        f"\nloss dump: shape={args.shape} device={args.device} ({device_name}) dtype={args.dtype} "
        f"batch={args.batch} seq={args.seq} chunk={args.chunk_size} repeats={args.repeats}\n"
    )
    print("| method | tokens/s | s/batch | peak mem (MiB) |")
    print("|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['method']} | {r['tokens_per_s']:,.0f} | {r['s_per_batch']:.3f} | {r['peak_mem_mib']:,.1f} |")
    if max_abs_diff is not None:
        print(f"\nmax |chunked - naive| per-token NLL: {max_abs_diff:.3g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
