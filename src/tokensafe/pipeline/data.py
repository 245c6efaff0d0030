"""Stage: canonical source tables and poison-mixed fine-tuning sets."""

from __future__ import annotations

import logging

import pandas as pd

from tokensafe.data.mixing import mix
from tokensafe.data.sources import load_source
from tokensafe.io import read_parquet, write_parquet

log = logging.getLogger("tokensafe")

# Which embedded world table stands in for each configured source.
EMBEDDED_TABLE = {"task": "task_train", "poison": "poison_pool", "task_eval": "task_test", "harmful_eval": "harmful_eval",
                  "harmful_ref": "harmful_ref", "utility_ref": "utility_ref", "safety_prompts": "safety_prompts",
                  "safety_demos": "safety_demos"}
REQUIRED = {"task": ["prompt", "response"], "poison": ["prompt", "response"],
            "task_eval": ["prompt", "reference"], "harmful_eval": ["prompt"],
            "harmful_ref": ["prompt", "response"], "utility_ref": ["prompt", "response"], "safety_prompts": ["prompt"],
            "safety_demos": ["prompt", "response"]}


def load_configured_source(name: str, spec, world_table: str | None) -> pd.DataFrame:
    if spec == "embedded":
        df = read_parquet(world_table, REQUIRED[name])
    else:
        df = load_source(spec)
        where = f"data.{name} ({spec.get('path') or spec.get('hub')})"
        missing = [c for c in REQUIRED[name] if c not in df or (c != "prompt" and df[c].isna().all())]
        if missing:
            raise ValueError(f"{where}: no {', '.join(missing)} values; map the column with 'columns:' in config.yaml")
    if len(df) == 0:
        raise ValueError(f"data.{name}: the source has no rows")
    return df


def write_source(name: str, spec, world_table: str | None, out: str) -> None:
    df = load_configured_source(name, spec, world_table)
    write_parquet(df, out, metadata={"source": name, "spec": spec})
    log.info("data.%s: %d rows -> %s", name, len(df), out)


def write_mix(task_path: str, poison_path: str, n: int, ratio: float, seed: int, out: str) -> None:
    task = read_parquet(task_path, ["prompt", "response", "sample_id"])
    poison = read_parquet(poison_path, ["prompt", "response", "sample_id"], allow_empty=ratio == 0)
    df = mix(task, poison, n, ratio, seed)
    write_parquet(df, out, metadata={"n": n, "poison_ratio": ratio, "seed": seed})
    log.info("fine-tuning set: %d samples, %d poison", len(df), int(df.is_poison.sum()))


def check_sources(data_cfg: dict) -> list[str]:
    """Load every local (non-embedded) source once, before any job runs, and report what is wrong.

    Hub sources are checked when their job runs: looking at them here would need the network.
    """
    problems = []
    for name in REQUIRED:
        spec = data_cfg.get(name)
        if spec == "embedded" or spec is None or "hub" in spec:
            continue
        try:
            load_configured_source(name, spec, None)
        except (ValueError, FileNotFoundError, KeyError) as e:
            problems.append(f"data.{name}: {e}")
    return problems
