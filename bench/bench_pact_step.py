#!/usr/bin/env python
"""PACT step time divided by plain SFT step time, same model, batch and LoRA, reference signals cached.

The target is a ratio of at most 1.15: the reference logits on the safety tokens (both views)
come from the cache that the `pact_reference` rule writes, so a PACT step costs one forward/backward
like SFT plus the restricted KL on |S| columns. For comparison the script also times the design that
runs two extra reference forward passes per step (full context and no-prompt view, adapters disabled).

    python bench/bench_pact_step.py                       # 'small' on CPU, 'llama-1b' when CUDA is available
    python bench/bench_pact_step.py --shape small --steps 5 --rounds 5 --batch 4 --seq 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tokensafe.runtime.numerics import cpu_name

SHAPES = {
    "small": dict(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=32000,
    ),
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
}


def build(shape: str, device: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tokensafe.train.lora import add_lora

    torch.manual_seed(0)
    torch.set_default_dtype(
        dtype
    )  # initialise in place: building 1B parameters on the CPU first takes longer than the benchmark
    try:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**SHAPES[shape], max_position_embeddings=4096))
    finally:
        torch.set_default_dtype(torch.float32)
    return add_lora(model, 8, 32, 0.0, ["q_proj", "v_proj"], seed=0)


def batch(vocab: int, b: int, t: int, k: int, device: str):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (b, t), generator=g)
    labels = ids.clone()
    labels[:, : t // 2] = -100  # second half is the answer
    answer_pos = torch.clamp(torch.arange(t) - (t // 2 - 1), min=0).expand(b, t).contiguous()
    out = {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": torch.ones_like(ids),
        "answer_pos": answer_pos,
        "ref_full": torch.randn(b, t, k, generator=g),
        "ref_post": torch.randn(b, t, k, generator=g),
    }
    return {key: v.to(device) for key, v in out.items()}, torch.randperm(vocab, generator=g)[:k].to(device)


def time_steps(model, loss_fns: dict, data, steps: int, rounds: int, device: str) -> dict[str, float]:
    """Median seconds per step of each loss function. The methods are interleaved round by round (each
    round times ``steps`` steps of every method), so a slow spell of a shared machine hits them all."""
    import statistics

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def run(fn, n):
        for _ in range(n):
            loss = fn(model, data)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    for fn in loss_fns.values():  # warm-up: allocator, kernels, autotuning
        run(fn, 2)
    samples = {name: [] for name in loss_fns}
    for _ in range(rounds):
        for name, fn in loss_fns.items():
            t0 = time.perf_counter()
            run(fn, steps)
            samples[name].append((time.perf_counter() - t0) / steps)
    return {name: statistics.median(v) for name, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    ap.add_argument("--shape", choices=SHAPES, default="llama-1b" if cuda else "small")
    ap.add_argument("--batch", type=int, default=2 if cuda else 4)
    ap.add_argument("--seq", type=int, default=512 if cuda else 256)
    ap.add_argument("--k", type=int, default=50, help="safety tokens |S|")
    ap.add_argument("--steps", type=int, default=5, help="steps per method per round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median round counts")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--out", default=None, help="JSON output (default bench/results/pact_step_<device>.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32

    from tokensafe.methods.pact.kl import KLSettings, pact_kl_loss, pact_loss
    from tokensafe.methods.pact.regularized_sft import RestrictedLogits

    model = build(args.shape, device, dtype)
    data, S = batch(SHAPES[args.shape]["vocab_size"], args.batch, args.seq, args.k, device)
    w = torch.softmax(torch.randn(args.k), 0).to(device)
    fwd = {k: data[k] for k in ("input_ids", "attention_mask", "labels")}

    def sft(m, d):
        return m(**fwd).loss

    restricted = RestrictedLogits(S)  # the training code's path: z_theta on S from the last hidden state

    def pact_cached(m, d):
        out = m(**fwd, output_hidden_states=True)
        kl, _ = pact_kl_loss(
            restricted(m, out),
            d["labels"],
            d["ref_full"],
            KLSettings(calibrate=True, decay=True, theta_restricted=True),
            safety_ids=S,
            weights=w,
            ref_post_S=d["ref_post"],
            answer_pos=d["answer_pos"],
        )
        return pact_loss(out.loss, kl, 3.0)

    def pact_two_ref_passes(m, d):
        with torch.no_grad(), m.disable_adapter():
            full = m(input_ids=d["input_ids"], attention_mask=d["attention_mask"]).logits[..., S].float()
            post = m(input_ids=d["input_ids"], attention_mask=d["attention_mask"]).logits[..., S].float()
        out = m(**fwd, output_hidden_states=True)
        kl, _ = pact_kl_loss(
            restricted(m, out),
            d["labels"],
            full,
            KLSettings(calibrate=True, decay=True, theta_restricted=True),
            safety_ids=S,
            weights=w,
            ref_post_S=post,
            answer_pos=d["answer_pos"],
        )
        return pact_loss(out.loss, kl, 3.0)

    times = time_steps(
        model,
        {"sft": sft, "pact_cached": pact_cached, "pact_two_ref_passes": pact_two_ref_passes},
        data,
        args.steps,
        args.rounds,
        device,
    )
    result = {
        "device": torch.cuda.get_device_name() if cuda else cpu_name(),
        "shape": args.shape,
        "batch": args.batch,
        "seq": args.seq,
        "k": args.k,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "dtype": str(dtype),
        "seconds_per_step": times,
        "ratio_pact_cached_over_sft": times["pact_cached"] / times["sft"],
        "ratio_two_ref_passes_over_sft": times["pact_two_ref_passes"] / times["sft"],
    }
    print("| step | s/step | / SFT |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {t:.4f} | {t / times['sft']:.3f} |")
    out = Path(args.out or Path(__file__).parent / "results" / f"pact_step_{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
