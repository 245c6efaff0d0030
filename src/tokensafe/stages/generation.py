"""Stage: answer the harmful and task evaluation prompts with one model (aligned + optional adapter)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pandas as pd
import torch

from tokensafe.data.lengths import task_max_new_tokens
from tokensafe.io import read_parquet, write_parquet
from tokensafe.modelref import load_name
from tokensafe.runtime.job import progress

log = logging.getLogger("tokensafe")

GEN_COLUMNS = ["set", "prompt_id", "prompt", "response", "reference", "category"]


def file_rows(df: pd.DataFrame) -> list[int] | None:
    """The prompts' row numbers in their source file (1-based, as messages name them)."""
    return [int(s) + 1 for s in df["sample_id"]] if "sample_id" in df else None


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
        from tokensafe.train.lora import load_tokenizer

        tok = load_tokenizer(aligned)
        [(h_out, t_out)] = vllm_responses(
            aligned=load_name(aligned),
            tokenizer=tok,
            runs=[(adapter, list(harmful.prompt), list(task.prompt))],
            gen_cfg=gen_cfg,
            seed=settings["seed"],
            template=template,
        )
    else:
        from tokensafe.eval.generation.generate import generate
        from tokensafe.train.lora import load_model, load_tokenizer

        tok = load_tokenizer(aligned)
        model = load_model(aligned, settings.get("dtype", "auto"), adapter=adapter)
        bs = gen_cfg.get("batch_size", 64)
        cfg = {**gen_cfg, "seed": settings["seed"]}
        h_out = generate(
            model,
            tok,
            list(harmful.prompt),
            template,
            cfg,
            bs,
            progress(log, "harmful prompts"),
            "data.harmful_eval",
            file_rows(harmful),
        )
        cfg_t = {**cfg, "max_new_tokens": task_max_new_tokens(gen_cfg)}
        t_out = generate(
            model,
            tok,
            list(task.prompt),
            template,
            cfg_t,
            bs,
            progress(log, "task prompts"),
            "data.task_eval",
            file_rows(task),
        )
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


def vllm_responses(
    *,
    aligned: str,
    tokenizer,
    runs: list[tuple[str | None, list[str], list[str]]],
    gen_cfg: dict,
    seed: int,
    template: str,
) -> list[tuple[list[str], list[str]]]:
    """Harmful and task responses of each ``(adapter, harmful prompts, task prompts)`` run, all through one vLLM
    engine on ``aligned`` (adapters as LoRA requests), decoded as the transformers backend decodes."""
    from tokensafe.data.lengths import encode_for_generation, model_positions
    from tokensafe.eval.generation.vllm_backend import ENV_ENGINE, decode_completion, run_vllm_sets, stage_python

    cfg_h = {**gen_cfg, "seed": seed}
    cfg_t = {**cfg_h, "max_new_tokens": task_max_new_tokens(gen_cfg)}
    # The model's positions, capped by the engine's max_model_len where set (tokensafe.data.lengths).
    positions, cap = model_positions(aligned), gen_cfg["vllm"].get("max_model_len")
    positions = cap if positions is None else positions if cap is None else min(positions, int(cap))
    truncate = bool(gen_cfg.get("truncate_long_prompts", False))

    def encoded(prompts, cfg, what):
        ids, cut = encode_for_generation(
            tokenizer, prompts, template, positions, int(cfg["max_new_tokens"]), truncate, what
        )
        if cut:
            log.info("%s: %d of %d prompts cut to fit the model's positions", what, cut, len(prompts))
        return ids

    sets = []
    for adapter, harmful, task in runs:
        # Token ids, not text: a chat template that writes BOS would otherwise get a second one from vLLM.
        sets.append((encoded(harmful, cfg_h, "data.harmful_eval"), cfg_h, adapter))
        sets.append((encoded(task, cfg_t, "data.task_eval"), cfg_t, adapter))
    if os.environ.get(ENV_ENGINE) == "shared":  # one engine for every run's job (tokensafe.eval.generation.vllm_server)
        from tokensafe.eval.generation.vllm_server import run_shared, socket_path

        python = stage_python() or sys.executable
        log_file = f"logs/vllm_engine/{Path(socket_path(python, aligned, gen_cfg['vllm'])).stem}.log"
        outs = run_shared(python, aligned, gen_cfg["vllm"], sets, log_file)
    else:
        outs = run_vllm_sets(aligned, sets, gen_cfg["vllm"], seed=seed)
    texts = [[decode_completion(tokenizer, c) for c in out] for out in outs]
    return [(texts[2 * i], texts[2 * i + 1]) for i in range(len(runs))]
