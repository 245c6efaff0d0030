"""Stage: answer the harmful and task evaluation prompts with one model (aligned + optional adapter)."""

from __future__ import annotations

import logging

import pandas as pd
import torch

from tokensafe.io import read_parquet, write_parquet
from tokensafe.runtime.logs import progress

log = logging.getLogger("tokensafe")

GEN_COLUMNS = ["set", "prompt_id", "prompt", "response", "reference", "category"]


def run_generate(
    *,
    aligned: str,
    adapter: str | None,
    harmful_path: str,
    task_path: str,
    gen_cfg: dict,
    settings: dict,
    out: str,
    threads: int = 1,
) -> None:
    torch.set_num_threads(threads)
    harmful = read_parquet(harmful_path, ["prompt"])
    task = read_parquet(task_path, ["prompt", "reference"])
    template = settings["prompt_template"]
    if gen_cfg["backend"] == "vllm":
        from tokensafe.chat import prompt_text
        from tokensafe.eval.vllm_backend import run_vllm_sets
        from tokensafe.train.lora import load_tokenizer

        tok = load_tokenizer(aligned)
        cfg_h = {**gen_cfg, "seed": settings["seed"]}
        cfg_t = {**cfg_h, "max_new_tokens": gen_cfg.get("task_max_new_tokens", gen_cfg["max_new_tokens"])}

        # Token ids, not text: a chat template that writes BOS would otherwise get a second one from vLLM.
        def ids(prompts):
            return [tok(prompt_text(tok, p, template), add_special_tokens=False)["input_ids"] for p in prompts]

        h_out, t_out = run_vllm_sets(
            aligned,
            [(ids(harmful.prompt), cfg_h), (ids(task.prompt), cfg_t)],
            adapter_path=adapter,
            tensor_parallel_size=max(1, torch.cuda.device_count()),
        )
    else:
        from tokensafe.eval.generate import generate
        from tokensafe.train.lora import load_model, load_tokenizer

        tok = load_tokenizer(aligned)
        model = load_model(aligned, settings.get("dtype", "auto"), adapter=adapter)
        bs = gen_cfg.get("batch_size", 64)
        cfg = {**gen_cfg, "seed": settings["seed"]}
        h_out = generate(model, tok, list(harmful.prompt), template, cfg, bs, progress(log, "harmful prompts"))
        cfg_t = {**cfg, "max_new_tokens": gen_cfg.get("task_max_new_tokens", gen_cfg["max_new_tokens"])}
        t_out = generate(model, tok, list(task.prompt), template, cfg_t, bs, progress(log, "task prompts"))
    rows = [
        pd.DataFrame(
            {
                "set": "harmful",
                "prompt_id": harmful["sample_id"].astype("int64"),
                "prompt": harmful.prompt,
                "response": h_out,
                "reference": None,
                "category": harmful["category"] if "category" in harmful else None,
            }
        ),
        pd.DataFrame(
            {
                "set": "task",
                "prompt_id": task["sample_id"].astype("int64"),
                "prompt": task.prompt,
                "response": t_out,
                "reference": task.reference.astype(str),
                "category": None,
            }
        ),
    ]
    df = pd.concat(rows, ignore_index=True)[GEN_COLUMNS]
    write_parquet(df, out, metadata={"settings": settings, "generation": gen_cfg})
    log.info("generated %d harmful and %d task responses", len(harmful), len(task))
