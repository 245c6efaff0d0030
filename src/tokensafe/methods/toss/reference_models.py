"""Stage family TOSS / TOSS-Pro (docs/methods.md §1): reference models, per-token loss dumps, masks, rounds.

Reference models are LoRA SFT runs from the aligned model (the model being fine-tuned, theta_0) on
D^h (harmful) or D^u (utility). Loss dumps score every token of the fine-tuning set through the shared
tokenisation function and store token ids beside the losses, so the selective fine-tune can check that
it trains on exactly the ids that were scored (docs/methods.md §A12).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from tokensafe.io import atomic_path, read_parquet, write_json
from tokensafe.runtime.launch import is_main_process
from tokensafe.train.checkpoint import checkpointed
from tokensafe.train.encoding import encode_dataset
from tokensafe.train.lm_losses import lm_loss
from tokensafe.train.loop import train
from tokensafe.train.lora import add_lora, load_model, load_tokenizer
from tokensafe.train.recipe import recipe

log = logging.getLogger("tokensafe")


def reference_set(table_paths: list[str], data_path: str | None = None, picks_path: str | None = None) -> pd.DataFrame:
    """D^h or D^u, plus (TOSS-Pro) the fine-tuning samples picked so far, as whole samples."""
    tables = [read_parquet(p, ["prompt", "response"]) for p in table_paths]
    if picks_path:
        picked = read_parquet(picks_path, ["sample_id"]).sample_id
        data = read_parquet(data_path, ["sample_id", "prompt", "response"])
        tables.append(data[data.sample_id.isin(picked)])
    return pd.concat([t[["prompt", "response"]] for t in tables], ignore_index=True)


def train_reference(
    *,
    aligned: str,
    table_paths: list[str],
    settings: dict,
    out_dir: str,
    info: dict,
    data_path: str | None = None,
    picks_path: str | None = None,
) -> None:
    """LoRA SFT of the aligned model on the reference set; saves the adapter (rank 0 when data-parallel)."""
    toss = settings["method_settings"]
    seed = settings["seed"]
    df = reference_set(table_paths, data_path, picks_path)
    if df.empty:
        raise ValueError("the reference set is empty")
    tok = load_tokenizer(aligned)
    model = load_model(aligned, settings.get("dtype", "auto"))
    lora = toss["lora"]
    model = add_lora(model, lora["r"], lora["alpha"], lora["dropout"], lora["target_modules"], seed)
    examples = encode_dataset(tok, df, settings["prompt_template"], settings["max_length"])
    log.info("reference model on %d samples (%s)", len(df), info)
    # The picks file (TOSS-Pro) is written by the same job just before: its content is in the examples' digest.
    files = [aligned, *table_paths, *([data_path] if data_path else [])]
    with checkpointed(out_dir, settings=[settings, info], inputs=files) as ck:
        history = train(
            model,
            examples,
            lm_loss,
            recipe(toss["recipe"], seed),
            pad_id=tok.pad_token_id,
            log=log.info,
            checkpoints=ck,
        )
        if not is_main_process():  # data-parallel: rank 0 writes the adapter
            return
        with atomic_path(out_dir) as tmp:
            model.save_pretrained(tmp)
            write_json(
                {"settings": settings, "history": history, **info, "n_samples": len(df)}, Path(tmp) / "training.json"
            )
