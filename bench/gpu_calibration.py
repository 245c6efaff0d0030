#!/usr/bin/env python
"""Measure the cost plan's GPU rows on one H100 / H200 (torch, transformers and peft only; nothing downloaded).

Builds Llama-3-8B-shaped models with random weights in bf16 (LlamaConfig of Meta-Llama-3-8B; Llama-Guard-3-8B has
the same shape) and measures, each as throughput-table rows (src/tokensafe/plan/throughput.yaml's format, source
measured, with the card and date), so that they can replace the unmeasured GPU rows:

  - LoRA SFT step (r 16 on q/v, the presets' micro-batch 4 x 2048 tokens): tokens/s and peak GPU memory
    -> finetune, toss_reference, toss_pro_retrain
  - a PACT-style step: the same + a weighted KL on |S| = 50 safety-token columns against cached reference logits
    (tau^2-scaled, lambda 3; tokensafe.methods.pact.kl) -> finetune/pact and the ladder's rungs
  - a TOSS per-token loss dump: forward only, per-token cross-entropy in chunks -> toss_losses, toss_utility_losses,
    aligned_losses, pact_reference, pact_safety_tokens
  - HF generation: 64 prompts x 128 tokens, 128 new tokens each -> generate/transformers, pact_safe_responses
  - a guard-judge forward: 16 conversations x 600 tokens and 10 generated tokens -> judge/transformers,
    judge_classifier, lm_eval/hf

Runs in well under 8 minutes on one H100 (model building included). Writes bench/results/gpu_calibration_<card>.json;
use it with `python -m tokensafe.plan CONFIG --throughput bench/results/gpu_calibration_h100.json`.

    python bench/gpu_calibration.py            # on the GPU
    python bench/gpu_calibration.py --smoke    # tiny shapes on CPU: checks the script, its rows are not for planning
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

LLAMA3_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    tie_word_embeddings=False,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)


def card_name() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(0)
    for kind in ("H200", "H100", "A100", "L40S"):
        if kind in name:
            return kind.lower()
    return name.replace(" ", "_").lower()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def build(shape: dict, device: str, dtype: torch.dtype, lora: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**shape, attn_implementation="sdpa")
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in model.parameters())
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        )
    return model, params


def timed(fn, warmup: int, steps: int, device: str) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def train_rates(model, batch: int, seq: int, vocab: int, device: str, steps: int) -> dict:
    """Seconds per LoRA SFT step and per PACT-style step, and their peak GPU memory."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    safety = torch.randint(0, vocab, (50,), device=device)
    weights = torch.rand(50, device=device)
    ref = torch.randn(batch, seq - 1, 50, device=device)  # cached reference logits on S (pact_reference's file)
    model.train()

    def sft():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def pact(lam: float = 3.0, tau: float = 2.0):
        out = model(input_ids=ids)
        logits = out.logits[:, :-1].float()
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        z = logits[..., safety] / tau
        q = F.softmax(ref / tau, dim=-1) * weights
        q = q / q.sum(-1, keepdim=True)
        kl = (q * (q.clamp_min(1e-12).log() - F.log_softmax(z, dim=-1))).sum(-1).mean() * tau**2
        (ce + lam * kl).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out = {}
    for name, fn in (("sft", sft), ("pact", pact)):
        reset_peak(device)
        out[name] = (timed(fn, 2, steps, device), peak_gb(device))
    return out


@torch.no_grad()
def loss_dump_rate(model, batch: int, seq: int, vocab: int, device: str, steps: int, chunk: int = 1024):
    """Seconds per forward that writes every token's loss (cross-entropy in chunks of positions)."""
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    model.eval()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model

    def dump():
        hidden = base.model(input_ids=ids).last_hidden_state[:, :-1].reshape(-1, base.config.hidden_size)
        labels = ids[:, 1:].reshape(-1)
        losses = [
            F.cross_entropy(base.lm_head(hidden[i : i + chunk]).float(), labels[i : i + chunk], reduction="none")
            for i in range(0, hidden.shape[0], chunk)
        ]
        return torch.cat(losses)

    reset_peak(device)
    return timed(dump, 1, steps, device), peak_gb(device)


@torch.no_grad()
def generate_rate(model, batch: int, prompt: int, new: int, vocab: int, device: str):
    """Seconds for one batch of greedy generation of exactly ``new`` tokens."""
    ids = torch.randint(0, vocab, (batch, prompt), device=device)
    model.eval()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model

    def gen():
        base.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )

    reset_peak(device)
    return timed(gen, 1, 1, device), peak_gb(device)


def rows_for(stages, device_kind, tokens_per_s, params, gpu, batch_tokens, how, machine, date, host_mb):
    pb = params / 1e9
    weights_gb = params * 2 / 2**30
    gpu_gb = None
    if gpu is not None:
        act = max(gpu - weights_gb, 0.0)
        gpu_gb = {
            "fixed": 0,
            "per_b": round(weights_gb / pb, 3),
            "per_ktok_per_b": round(act / (batch_tokens / 1e3) / pb, 4),
        }
    return [
        {
            "stage": s,
            "device": device_kind,
            "size": "7-8B" if params > 4e9 else "embedded",
            "tokens_per_s": round(tokens_per_s, 1),
            "params": params,
            "overhead_s": 120,  # model load from disk: not measured here (random weights); the table's assumption
            "host_mb": host_mb,
            **({"gpu_gb": gpu_gb} if gpu_gb else {}),
            "source": "measured",
            "machine": machine,
            "date": date,
            "how": f"{how}; overhead_s (loading the weights) assumed, not measured",
        }
        for s in stages
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (checks the script; not for planning)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        raise SystemExit("no CUDA device: run on the GPU, or --smoke to check the script on CPU")
    shape = TINY if args.smoke else LLAMA3_8B
    dtype = torch.float32 if args.smoke else torch.bfloat16
    batch, seq = (2, 64) if args.smoke else (4, 2048)
    steps = args.steps or (2 if args.smoke else 5)
    card = "cpu-smoke" if args.smoke else card_name()
    kind = card if card in ("h100", "h200") else card
    machine = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (smoke shapes)"
    date = datetime.date.today().isoformat()
    vocab = shape["vocab_size"]
    t_start = time.perf_counter()
    results: dict = {"card": card, "date": date, "torch": torch.__version__, "shape": shape, "measurements": {}}
    rows: list[dict] = []
    host = {"fixed": 4000, "per_b": 2000}  # host memory is not what this script measures: the table's assumption

    model, params = build(shape, device, dtype, lora=True)
    while True:  # the presets' micro-batch 4, halved where the card's memory is short (recorded in the rows)
        try:
            tr = train_rates(model, batch, seq, vocab, device, steps)
            break
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            model.zero_grad(set_to_none=True)
            reset_peak(device)
    tok = batch * seq
    for name, (sec, gpu) in tr.items():
        results["measurements"][f"{name}_step"] = {"batch": batch, "seq": seq, "s_per_step": sec, "peak_gb": gpu}
    rows += rows_for(
        ["finetune", "toss_reference", "toss_pro_retrain"],
        kind,
        tok / tr["sft"][0],
        params,
        tr["sft"][1],
        tok,
        f"LoRA r16 q/v SFT step, micro-batch {batch} x {seq}, random weights, {str(dtype)[6:]}, sdpa",
        machine,
        date,
        host,
    )
    rows += rows_for(
        [f"finetune/{m}" for m in ("pact", "pact_tokens", "pact_weights", "pact_noprompt")],
        kind,
        tok / tr["pact"][0],
        params,
        tr["pact"][1],
        tok,
        f"PACT-style step: CE + 3 x weighted KL on 50 columns vs cached logits, {batch} x {seq}",
        machine,
        date,
        host,
    )
    del tr
    dump_batch = batch * 2
    sec, gpu = loss_dump_rate(model, dump_batch, seq, vocab, device, steps)
    results["measurements"]["loss_dump"] = {"batch": dump_batch, "seq": seq, "s_per_batch": sec, "peak_gb": gpu}
    rows += rows_for(
        ["toss_losses", "toss_utility_losses", "aligned_losses", "pact_reference", "pact_safety_tokens"],
        kind,
        dump_batch * seq / sec,
        params,
        gpu,
        dump_batch * seq,
        f"forward + per-token CE in chunks of 1024, {dump_batch} x {seq}",
        machine,
        date,
        host,
    )
    g_batch, g_prompt, g_new = (4, 16, 8) if args.smoke else (64, 128, 128)
    sec, gpu = generate_rate(model, g_batch, g_prompt, g_new, vocab, device)
    results["measurements"]["generate"] = {"batch": g_batch, "prompt": g_prompt, "new": g_new, "s": sec, "peak_gb": gpu}
    rows += rows_for(
        ["generate/transformers", "pact_safe_responses"],
        kind,
        g_batch * (g_prompt + g_new) / sec,
        params,
        gpu,
        g_batch * (g_prompt + g_new),
        f"HF greedy generate, {g_batch} prompts x {g_prompt} tokens, {g_new} new tokens each",
        machine,
        date,
        host,
    )
    j_batch, j_len, j_new = (4, 32, 2) if args.smoke else (16, 600, 10)
    sec, gpu = generate_rate(model, j_batch, j_len, j_new, vocab, device)
    results["measurements"]["guard_judge"] = {"batch": j_batch, "len": j_len, "new": j_new, "s": sec, "peak_gb": gpu}
    rows += rows_for(
        ["judge/transformers", "judge_classifier", "lm_eval/hf"],
        kind,
        j_batch * (j_len + j_new) / sec,
        params,
        gpu,
        j_batch * (j_len + j_new),
        f"Llama-Guard-3-8B-shaped judge: {j_batch} conversations x {j_len} tokens, {j_new} generated",
        machine,
        date,
        host,
    )
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["rows"] = rows
    if args.smoke:
        results["note"] = "smoke shapes on CPU: checks the script; these rows are not for planning"
    out = Path(args.out or Path(__file__).parent / "results" / f"gpu_calibration_{card}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    for r in rows:
        print(f"{r['stage']:<24} {r['tokens_per_s']:>10.1f} tok/s  {r.get('gpu_gb')}")
    print(f"wrote {out} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
