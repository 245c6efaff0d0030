"""Stage: canonical source tables and poison-mixed fine-tuning sets."""

from __future__ import annotations

import logging

from tokensafe.data.card import build_card, card_markdown
from tokensafe.data.mixing import mix
from tokensafe.data.sources import load_configured_source
from tokensafe.io import read_json, read_parquet, write_json, write_parquet, write_text

log = logging.getLogger("tokensafe")


def write_source(*, name: str, spec, world_table: str | None, out: str) -> None:
    df = load_configured_source(name, spec, world_table)
    write_parquet(df, out, metadata={"source": name, "spec": spec})
    log.info("data.%s: %d rows -> %s", name, len(df), out)


def write_mix(*, task_path: str, poison_path: str, n: int, ratio: float, seed: int, out: str) -> None:
    task = read_parquet(task_path, ["prompt", "response", "sample_id"])
    poison = read_parquet(poison_path, ["prompt", "response", "sample_id"], allow_empty=ratio == 0)
    df = mix(task, poison, n, ratio, seed)
    write_parquet(df, out, metadata={"n": n, "poison_ratio": ratio, "seed": seed})
    log.info("fine-tuning set: %d samples, %d poison", len(df), int(df.is_poison.sum()))


def write_card(
    *,
    data_cfg: dict,
    tables: dict[str, str],
    sources: dict[str, list[str]],
    tokenizer: str,
    template: str,
    max_length: int,
    out_json: str,
    out_md: str,
    overlap: str | None = None,
) -> None:
    """The data card of every role the config's runs read (tokensafe.data.card), as JSON and markdown; with the
    overlap record (results/data/overlap.json) in it."""
    from tokensafe.train.lora import load_tokenizer

    card = build_card(
        data_cfg=data_cfg,
        tables=tables,
        sources=sources,
        tokenizer=load_tokenizer(tokenizer),
        template=template,
        max_length=max_length,
        overlap=read_json(overlap) if overlap else None,
    )
    write_json(card, out_json)
    write_text(card_markdown(card) + "\n", out_md)
    for name, e in card["roles"].items():
        log.info("data.%s: %d rows, card hash %s", name, e["rows"], e["hash"])
