#!/usr/bin/env bash
# Both benchmarks on a CUDA machine, at the Llama-3.2-1B shape (random weights: nothing is downloaded).
# Results go to $1 (default bench/results); uses the python on PATH, with src/ importable.
set -euo pipefail
out=${1:-bench/results}
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
python3 "$here/bench/bench_loss_dump.py" --shape llama-1b --device cuda --out "$out/loss_dump_cuda.json"
# PACT's training batch (2 sequences, spec 2.7) at 512 tokens, and a fuller batch where the KL's fixed cost matters less.
python3 "$here/bench/bench_pact_step.py" --shape llama-1b --batch 2 --seq 512 --out "$out/pact_step_cuda.json"
python3 "$here/bench/bench_pact_step.py" --shape llama-1b --batch 8 --seq 1024 --out "$out/pact_step_cuda_b8x1024.json"
