"""Load public data sets in their own formats into one canonical table.

Every loader returns a DataFrame whose first columns are :data:`CANONICAL_COLUMNS`:

==========  ======  ===============================================================
prompt      str     the user turn (for SST-2 / AG News: task instruction + input)
response    str     the training target; "" for evaluation-only prompt sets
reference   object  gold answer / label for utility sets (str), else None
category    object  harm category where the set has one (str), else None
source      str     the spec's ``name`` (default: the format name)
sample_id   int64   row number in the source file(s) before any shuffling or limit
==========  ======  ===============================================================

The formats (:mod:`tokensafe.data.formats`) and the file reader (:mod:`tokensafe.data.tables`)
live beside this module. Format-specific extras follow (``is_benign`` for JailbreakBench, ``behavior`` ...).
A format maps
*roles* (``prompt``, ``label``, ...) to source columns, trying candidates in order; ``columns`` in the
spec overrides any role. A source is described by a small dict, e.g. from the workflow config::

    load_source({"path": "/work/shared/data/gsm8k", "split": "test", "format": "gsm8k", "limit": 500})
    load_source({"hub": "walledai/HarmBench", "subset": "standard", "split": "train", "format": "harmbench"})
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tokensafe.data.formats import FORMATS, SourceFormat, is_missing, read_hexphi
from tokensafe.data.roles import ROLES
from tokensafe.data.tables import load_table, table_in_dir
from tokensafe.io import read_parquet

CANONICAL_COLUMNS = ("prompt", "response", "reference", "category", "source", "sample_id")


SPEC_KEYS = (
    "path",
    "hub",
    "subset",
    "format",
    "split",
    "columns",
    "limit",
    "seed",
    "name",
    "options",
    "prompt_column",
    "response_column",
    "reference_column",
    "category_column",
)


def _read_hub(spec: dict) -> pd.DataFrame:
    try:
        import datasets  # noqa: PLC0415 - optional dependency, only for hub sources
    except ImportError:
        raise ImportError(
            f"source hub={spec['hub']!r} needs the `datasets` package, which is not installed: "
            "pip install datasets, or download the data and give a local `path` instead"
        ) from None
    ds = datasets.load_dataset(spec["hub"], spec.get("subset"), split=spec.get("split") or "train")
    return ds.to_pandas()


def _read(spec: dict, fmt: SourceFormat) -> tuple[pd.DataFrame, str]:
    if "hub" in spec:
        if fmt.name == "hexphi":
            raise ValueError("hexphi: the HEx-PHI files are gated; download them and give a local `path`")
        return _read_hub(spec), f"{fmt.name} source hub:{spec['hub']}"
    path = Path(spec["path"])
    where = f"{fmt.name} source {path}"
    if fmt.name == "hexphi":
        return read_hexphi(path), where
    if path.is_dir():
        found = table_in_dir(path, spec.get("split"))
        if isinstance(found, list):
            return pd.concat(
                [load_table(f) for f in found], ignore_index=True
            ), f"{fmt.name} source {path}/{spec['split']}-*"
        path, where = found, f"{fmt.name} source {found}"
    return load_table(path), where


def _resolve_roles(raw: pd.DataFrame, fmt: SourceFormat, overrides: dict[str, str], where: str) -> dict[str, str]:
    unknown = sorted(set(overrides) - set(fmt.roles))
    if unknown:
        raise ValueError(
            f"{where}: columns override names unknown role(s) {unknown}; {fmt.name} roles: {sorted(fmt.roles)}"
        )
    cols: dict[str, str] = {}
    missing: list[str] = []
    for role, candidates in fmt.roles.items():
        if role in overrides:
            candidates = (overrides[role],)
        hit = next((c for c in candidates if c in raw.columns), None)
        if hit is not None:
            cols[role] = hit
        elif role in fmt.required or role in overrides:  # an explicit override must exist
            missing.append(" or ".join(f"'{c}'" for c in candidates))
    if missing:
        found = ", ".join(map(str, raw.columns))
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)} (found: {found})")
    return cols


def load_source(spec: dict) -> pd.DataFrame:
    """Load one source described by ``spec`` into the canonical table (see the module docstring).

    Keys: ``path`` (file or folder) or ``hub`` (+ ``subset``), ``format`` (default ``generic``),
    ``split`` (file in a folder / hub split / JailbreakBench subset), ``columns`` (role -> source
    column), ``options`` (format options, e.g. ``answer_style``), ``name`` (the ``source`` value),
    ``limit`` and ``seed``: with a seed the rows are shuffled with it, then the first ``limit`` kept;
    without one the first ``limit`` rows in file order are kept (PACT: "the first 1000 test rows").
    """
    if not isinstance(spec, dict):
        raise ValueError(f"source spec: expected a mapping, found {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"source spec: unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    if ("path" in spec) == ("hub" in spec):
        raise ValueError("source spec: give exactly one of 'path' or 'hub'")
    fmt_name = spec.get("format", "generic")
    if fmt_name not in FORMATS:
        raise ValueError(f"source spec: unknown format {fmt_name!r}; known: {', '.join(FORMATS)}")
    fmt = FORMATS[fmt_name]
    unknown_opts = sorted(set(spec.get("options") or {}) - set(fmt.options))
    if unknown_opts:
        raise ValueError(f"{fmt_name} options: unknown {unknown_opts}; allowed: {sorted(fmt.options) or 'none'}")
    opts = {**fmt.options, **(spec.get("options") or {}), "_split": spec.get("split")}
    overrides = dict(spec.get("columns") or {})
    for key, role in (
        ("prompt_column", "prompt"),
        ("response_column", "response"),
        ("reference_column", "reference"),
        ("category_column", "category"),
    ):
        if key in spec:
            if fmt_name != "generic":
                raise ValueError(
                    f"source spec: '{key}' is for format generic; use columns: {{{role}: ...}} for {fmt_name}"
                )
            overrides[role] = spec[key]

    raw, where = _read(spec, fmt)
    if len(raw) == 0:
        raise ValueError(f"{where}: no rows")
    raw = raw.reset_index(drop=True)  # the index is the sample_id from here on
    cols = _resolve_roles(raw, fmt, overrides, where)
    out = fmt.build(raw, cols, opts)

    empty = out.index[out["prompt"].str.strip() == ""].tolist()
    if empty:
        raise ValueError(f"{where}: empty prompt in rows {empty[:10]}{' ...' if len(empty) > 10 else ''}")
    out["source"] = str(spec.get("name", fmt_name))
    out["sample_id"] = out.index.astype(np.int64)

    if "seed" in spec and spec["seed"] is not None:
        rng = np.random.default_rng(int(spec["seed"]))
        out = out.iloc[rng.permutation(len(out))]
    if spec.get("limit") is not None:
        limit = spec["limit"]
        if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"{where}: limit must be a positive integer, found {limit!r}")
        if limit > len(out):
            raise ValueError(f"{where}: limit {limit} exceeds the {len(out)} rows available")
        out = out.iloc[:limit]

    extras = [c for c in out.columns if c not in CANONICAL_COLUMNS]
    out = out[list(CANONICAL_COLUMNS) + extras].reset_index(drop=True)
    out["prompt"] = out["prompt"].astype(str)
    out["response"] = out["response"].astype(str)
    for col in ("reference", "category"):
        out[col] = pd.Series([None if is_missing(v) else str(v) for v in out[col]], dtype=object)
    out["source"] = out["source"].astype(str)
    out["sample_id"] = out["sample_id"].astype(np.int64)
    return out


def load_configured_source(name: str, spec, world_table: str | None) -> pd.DataFrame:
    if spec == "embedded":
        df = read_parquet(world_table, ROLES[name].required)
    else:
        df = load_source(spec)
        where = f"data.{name} ({spec.get('path') or spec.get('hub')})"
        missing = [c for c in ROLES[name].required if c not in df or (c != "prompt" and df[c].isna().all())]
        if missing:
            raise ValueError(f"{where}: no {', '.join(missing)} values; map the column with 'columns:' in config.yaml")
    if len(df) == 0:
        raise ValueError(f"data.{name}: the source has no rows")
    return df


def check_sources(data_cfg: dict) -> list[str]:
    """Load every local (non-embedded) source once, before any job runs, and report what is wrong.

    Hub sources are checked when their job runs: looking at them here would need the network.
    """
    problems = []
    for name in ROLES:
        spec = data_cfg.get(name)
        if spec == "embedded" or spec is None or "hub" in spec:
            continue
        try:
            load_configured_source(name, spec, None)
        except (ValueError, FileNotFoundError, KeyError) as e:
            problems.append(f"data.{name}: {e}")
    return problems
