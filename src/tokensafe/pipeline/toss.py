"""Stage family TOSS / TOSS-Pro (spec section 1): reference models, per-token loss dumps, masks, rounds.

Reference models are LoRA SFT runs from the aligned model (the model being fine-tuned, theta_0) on
D^h (harmful) or D^u (utility). Loss dumps score every token of the fine-tuning set through the shared
tokenisation function and store token ids beside the losses, so the selective fine-tune can check that
it trains on exactly the ids that were scored (spec A12).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from tokensafe.chat import IGNORE_INDEX, char_span_to_token_mask
from tokensafe.io import atomic_path, read_parquet, write_json, write_parquet
from tokensafe.launch import is_main_process
from tokensafe.losses.token_loss import loss_table, per_token_nll
from tokensafe.losses.toss import (
    discard_precision_recall, global_topd_mask, mask_summary, merge_loss_dumps, per_sample_topd_mask,
    pick_refinement_samples,
)
from tokensafe.pipeline.finetune import encode_dataset
from tokensafe.pipeline.world import recipe
from tokensafe.train.batching import collate
from tokensafe.train.lora import add_lora, load_model, load_tokenizer
from tokensafe.train.loop import train
from tokensafe.train.objectives import lm_loss

log = logging.getLogger("tokensafe")

MASK_COLUMNS = ["sample_id", "position", "token_id", "score", "discard", "is_poison_token"]


def reference_set(table_paths: list[str], data_path: str | None = None, picks_path: str | None = None) -> pd.DataFrame:
    """D^h or D^u, plus (TOSS-Pro) the fine-tuning samples picked so far, as whole samples."""
    tables = [read_parquet(p, ["prompt", "response"]) for p in table_paths]
    if picks_path:
        picked = read_parquet(picks_path, ["sample_id"]).sample_id
        data = read_parquet(data_path, ["sample_id", "prompt", "response"])
        tables.append(data[data.sample_id.isin(picked)])
    return pd.concat([t[["prompt", "response"]] for t in tables], ignore_index=True)


def train_reference(aligned: str, table_paths: list[str], settings: dict, out_dir: str, info: dict,
                    data_path: str | None = None, picks_path: str | None = None) -> None:
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
    history = train(model, examples, lm_loss, recipe(toss["recipe"], seed), pad_id=tok.pad_token_id, log=log.info)
    if not is_main_process():  # data-parallel: rank 0 writes the adapter
        return
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        write_json({"settings": settings, "history": history, **info, "n_samples": len(df)}, Path(tmp) / "training.json")


def poison_token_flags(tok, df: pd.DataFrame, examples: list[dict]) -> list[np.ndarray]:
    """Per example, which tokens lie in the sample's recorded harmful span (all False without spans)."""
    flags = []
    has_spans = {"harm_start", "harm_end"} <= set(df.columns)
    for i, ex in enumerate(examples):
        f = np.zeros(len(ex["input_ids"]), dtype=bool)
        if has_spans:
            row = df.iloc[i]
            if row.harm_end > row.harm_start:
                resp = ex["labels"] != IGNORE_INDEX
                n = int(resp.sum())
                f[resp] = char_span_to_token_mask(tok, row.response, [(int(row.harm_start), int(row.harm_end))], n)
        flags.append(f)
    return flags


@torch.no_grad()
def dump_losses(aligned: str, adapter: str | None, data_path: str, settings: dict, out: str, batch_size: int = 32) -> None:
    """Per-token NLL of every token of the fine-tuning set under (aligned + adapter), as Parquet columns."""
    df = read_parquet(data_path, ["sample_id", "prompt", "response"])
    tok = load_tokenizer(aligned)
    model = load_model(aligned, settings.get("dtype", "auto"), adapter=adapter)
    examples = encode_dataset(tok, df, settings["prompt_template"], settings["max_length"])
    flags = poison_token_flags(tok, df, examples)
    chunk = settings["method_settings"].get("chunk_size", 1024)
    device = next(model.parameters()).device
    order = np.argsort([-len(e["input_ids"]) for e in examples], kind="stable")
    tables = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([examples[i] for i in idx], pad_id=tok.pad_token_id)
        nll = per_token_nll(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), chunk)
        t = loss_table(df.sample_id.to_numpy()[idx], batch["input_ids"], batch["labels"] != IGNORE_INDEX, nll.cpu(),
                       attention_mask=batch["attention_mask"])
        poison = np.concatenate([flags[i] for i in idx])  # loss_table emits rows sample by sample, unpadded
        tables.append(t.append_column("is_poison_token", pa.array(poison)))
        if start // batch_size % 10 == 0:
            log.info("scored %d/%d samples", min(start + batch_size, len(order)), len(order))
    table = pa.concat_tables(tables).sort_by([("sample_id", "ascending"), ("position", "ascending")])
    write_parquet(table, out, metadata={"adapter": adapter, "settings": settings})
    log.info("loss dump: %d tokens (%d response) -> %s", table.num_rows, int(pc_sum(table["is_response"])), out)


def pc_sum(col) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(col).as_py() or 0)


def scored_tokens(util_path: str, harm_path: str) -> pd.DataFrame:
    util = read_parquet(util_path)
    harm = read_parquet(harm_path)
    merged = merge_loss_dumps(util, harm)
    flags = util.set_index(["sample_id", "position"])["is_poison_token"]
    merged["is_poison_token"] = flags.reindex(pd.MultiIndex.from_frame(merged[["sample_id", "position"]])).to_numpy()
    return merged


def make_mask(util_path: str, harm_path: str, d: float, selection: str, out_mask: str, out_summary: str, info: dict) -> dict:
    """Discard the top-d response tokens by S = L_u - L_h (globally or per sample); report against the truth."""
    scored = scored_tokens(util_path, harm_path)
    masked = global_topd_mask(scored, d) if selection == "global" else per_sample_topd_mask(scored, d)
    resp = masked[masked.is_response]
    summary = {**info, "d": d, "selection": selection, **mask_summary(masked),
               **{f"poison_{k}": v for k, v in discard_precision_recall(masked).items()},
               "mean_score_poison": float(resp[resp.is_poison_token].score.mean()) if resp.is_poison_token.any() else None,
               "mean_score_clean": float(resp[~resp.is_poison_token].score.mean())}
    write_parquet(resp[MASK_COLUMNS].reset_index(drop=True), out_mask, metadata=summary)
    write_json(summary, out_summary)
    log.info("mask: discarded %d/%d tokens in %d samples; precision %.3f recall %.3f", summary["tokens_discarded"],
             summary["tokens_total"], summary["samples_touched"], summary["poison_precision"], summary["poison_recall"])
    return summary


def select_samples(util_path: str, harm_path: str, k: int, previous: str | None, data_path: str, out: str, round_: int) -> None:
    """TOSS-Pro: the k highest-scoring fine-tuning samples not chosen before (spec 1.7); cumulative."""
    scored = scored_tokens(util_path, harm_path)
    prev = read_parquet(previous, ["sample_id", "round"]) if previous else pd.DataFrame({"sample_id": [], "round": []})
    picks = pick_refinement_samples(scored, k, exclude=set(prev.sample_id.astype(int)))
    data = read_parquet(data_path, ["sample_id"])
    poison = set(data.sample_id[data.is_poison]) if "is_poison" in data else set()
    new = pd.DataFrame({"sample_id": np.asarray(picks, dtype=np.int64), "round": round_})
    out_df = pd.concat([prev.astype({"sample_id": "int64", "round": "int64"}), new], ignore_index=True)
    hit = float(np.mean([p in poison for p in picks])) if picks else 0.0
    write_parquet(out_df, out, metadata={"k": k, "round": round_, "new": len(picks), "poison_share_of_new": hit})
    log.info("round %d: picked %d samples (%.0f%% poison), %d in total", round_, len(picks), 100 * hit, len(out_df))
