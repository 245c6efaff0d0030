"""Stage: LoRA fine-tuning of the aligned model with a method's objective."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from tokensafe.io import atomic_path, read_parquet, write_json
from tokensafe.methods.registry import FinetuneContext, builder
from tokensafe.runtime.launch import is_main_process
from tokensafe.train.checkpoint import checkpointed
from tokensafe.train.encoding import encode_dataset
from tokensafe.train.loop import train
from tokensafe.train.lora import add_lora, load_model, load_tokenizer
from tokensafe.train.recipe import recipe

log = logging.getLogger("tokensafe")


def run_finetune(
    *,
    method: str,
    data_path: str,
    aligned: str,
    settings: dict,
    out_dir: str,
    inputs: dict[str, str] | None = None,
    threads: int = 1,
) -> None:
    torch.set_num_threads(threads)
    seed = settings["seed"]
    build = builder(method)  # fail on an unknown method before loading anything
    df = read_parquet(data_path, ["sample_id", "prompt", "response"])
    tok = load_tokenizer(aligned)
    model = load_model(aligned, settings.get("dtype", "auto"))
    lora = settings["lora"]
    model = add_lora(model, lora["r"], lora["alpha"], lora["dropout"], lora["target_modules"], seed)
    examples = encode_dataset(tok, df, settings["prompt_template"], settings["max_length"])
    ctx = FinetuneContext(method, settings, dict(inputs or {}), model, tok, df, examples)
    plan = build(ctx)
    n_poison = int(df["is_poison"].sum()) if "is_poison" in df else 0
    log.info(
        "%s: %d examples (%d poison in the set), LoRA r=%d on %s %s",
        method,
        len(plan.examples),
        n_poison,
        lora["r"],
        ",".join(lora["target_modules"]),
        plan.info or "",
    )
    t0 = time.time()
    # A rerun of a killed job resumes from its checkpoint (out_dir + ".checkpoint"), removed once the adapter is saved.
    with checkpointed(out_dir, settings=settings, inputs=[data_path, aligned, *(inputs or {}).values()]) as ck:
        history = train(
            model,
            plan.examples,
            plan.loss_fn,
            recipe(settings["recipe"], seed),
            pad_id=tok.pad_token_id,
            log=log.info,
            checkpoints=ck,
        )
        report = plan.after_training(model) if plan.after_training else None
        if not is_main_process():  # data-parallel: rank 0 writes the adapter
            return
        with atomic_path(out_dir) as tmp:
            model.save_pretrained(tmp)
            # ``inputs``: the method's extra input files (masks, cached reference signals, ...), as provenance and
            # so that tests/gpu_smoke.py can replay the run without restating the rules' inputs.
            write_json(
                {
                    "method": method,
                    "settings": settings,
                    "inputs": dict(inputs or {}),
                    "history": history,
                    "info": plan.info,
                    "post_training": report,
                    "train_seconds": round(time.time() - t0, 2),
                },
                Path(tmp) / "training.json",
            )
