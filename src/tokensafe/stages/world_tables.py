"""Stage: the embedded world's data tables and tokenizer.

Kept apart from ``pipeline.world`` (model training) so that these two jobs, which head the DAG's critical
path, import neither torch nor a model class: each saves ~5 s of start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tokensafe.eval.safety_judges.llama_guard import build_guard_prompt
from tokensafe.io import atomic_path, read_parquet, write_parquet
from tokensafe.world.corpus import build_world_tables
from tokensafe.world.tokenizer import train_tokenizer

log = logging.getLogger("tokensafe")


def write_world_tables(*, out_dir: str, seed: int) -> None:
    tables = build_world_tables(seed)
    for name, df in tables.items():
        write_parquet(df, Path(out_dir) / f"{name}.parquet", metadata={"world_seed": seed, "split": name})
        log.info("%s: %d rows", name, len(df))


def build_tokenizer(*, data_dir: str, out_dir: str, vocab_size: int) -> None:
    d = Path(data_dir)
    texts = list(read_parquet(d / "pretrain.parquet", ["text"]).text)
    for name in ("alignment", "task_train", "poison_pool", "harmful_ref", "harmful_eval", "task_test"):
        df = read_parquet(d / f"{name}.parquet", ["prompt", "response"])
        texts += list(df.prompt) + list(df.response)
    guard = read_parquet(d / "guard_train.parquet", ["prompt", "response"]).head(50)
    texts += [build_guard_prompt(u, a, wrap=False) for u, a in zip(guard.prompt, guard.response)]
    tok = train_tokenizer(texts, vocab_size)
    with atomic_path(out_dir) as tmp:
        tok.save_pretrained(tmp)
    log.info("tokenizer: %d tokens", len(tok))
