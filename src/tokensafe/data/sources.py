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

    load_source({"path": "data/gsm8k", "split": "test", "format": "gsm8k", "limit": 500})
    load_source({"hub": "walledai/HarmBench", "subset": "standard", "split": "train", "format": "harmbench"})
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tokensafe.data.formats import FORMATS, Headerless, SourceFormat, is_missing, read_hexphi
from tokensafe.data.roles import ROLES
from tokensafe.data.safety_labels import HARMFUL_ROLES, check_harmful_rows
from tokensafe.data.tables import TSV_HINT, load_table, looks_tab_separated, table_in_dir
from tokensafe.io import read_parquet

CANONICAL_COLUMNS = ("prompt", "response", "reference", "category", "source", "sample_id")


SPEC_KEYS = (
    "path",
    "hub",
    "revision",
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
    "header",
    "names",
    "where",
)


def _read_hub(spec: dict) -> pd.DataFrame:
    try:
        import datasets  # noqa: PLC0415 - optional dependency, only for hub sources
    except ImportError:
        raise ImportError(
            f"source hub={spec['hub']!r} needs the `datasets` package, which is not installed: "
            "pip install datasets, or download the data and give a local `path` instead"
        ) from None
    try:
        ds = datasets.load_dataset(
            spec["hub"], spec.get("subset"), split=spec.get("split") or "train", revision=spec.get("revision")
        )
    except ConnectionError as e:  # datasets' own, a subclass of the builtin: no hub (offline, or no network)
        raise ConnectionError(
            f"source hub={spec['hub']!r} could not be loaded from the Hugging Face hub ({e}): download the data and "
            "give a local `path` instead, or run where the hub is reachable"
        ) from None
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
    headerless = spec.get("header") == "none"
    if path.is_dir():
        found = table_in_dir(path, spec.get("split"))
        if isinstance(found, list):
            return pd.concat(
                [load_table(f, headerless) for f in found], ignore_index=True
            ), f"{fmt.name} source {path}/{spec['split']}-*"
        path, where = found, f"{fmt.name} source {found}"
    return load_table(path, headerless), where


def _check_header_keys(spec: dict, fmt: SourceFormat) -> None:
    header = spec.get("header")
    if header is not None and header != "none":
        raise ValueError(f"source spec: header: expected 'none' (the file has no header row), found {header!r}")
    if header and "hub" in spec:
        raise ValueError(f"source spec: header: none is for local .csv/.tsv files, not hub:{spec['hub']}")
    if header and fmt.name == "hexphi":
        raise ValueError("source spec: hexphi files are read as headerless already; drop header: none")
    if "names" in spec and not header:
        raise ValueError("source spec: names: is for a headerless file (header: none); columns: maps a header's names")


def _name_columns(raw: pd.DataFrame, spec: dict, fmt: SourceFormat, where: str) -> tuple[pd.DataFrame, Headerless]:
    """A headerless table's columns named by ``names``, else by the format's published headerless layout."""
    names = spec.get("names")
    if names is None:
        if fmt.headerless is None:
            raise ValueError(
                f"{where}: header: none needs names: [...], one per column ({fmt.name} has no published headerless "
                "layout)"
            )
        layout = fmt.headerless
    else:
        layout = Headerless(tuple(names), {}, {}, "names")
    if len(set(layout.names)) != len(layout.names):
        raise ValueError(f"{where}: names {list(layout.names)} repeat a name")
    if len(layout.names) != raw.shape[1]:
        tabs = raw.shape[1] == 1 and looks_tab_separated(str(raw.iloc[0, 0]))
        raise ValueError(
            f"{where}: {layout.description} has {len(layout.names)} column(s) {list(layout.names)}; "
            f"the file's rows have {raw.shape[1]} field(s)" + (f"; {TSV_HINT}" if tabs else "")
        )
    return raw.set_axis(list(layout.names), axis=1), layout


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
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)} (found: {found}){_header_hint(raw)}")
    return cols


def _header_hint(raw: pd.DataFrame) -> str:
    """A header cell that is a number means the first row was data: say how to read a headerless file. A header
    cell holding tabs: a tab-separated file read as CSV."""
    if any(looks_tab_separated(str(c)) for c in raw.columns):
        return f"; {TSV_HINT}"
    if not any(_is_number(c) for c in raw.columns):
        return ""
    return "; the first row looks like data: for a headerless file give header: none and names: [...]"


def _is_published_headerless(raw: pd.DataFrame, fmt: SourceFormat) -> bool:
    """The format's published headerless file read with a header: its width, and a number among the 'names'."""
    return (
        fmt.headerless is not None
        and raw.shape[1] == len(fmt.headerless.names)
        and any(_is_number(c) for c in raw.columns)
    )


def _is_number(v) -> bool:
    try:
        float(str(v))
    except ValueError:
        return False
    return True


def _join_columns(raw: pd.DataFrame, overrides: dict, where: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Roles mapped to several columns get one new column: the non-empty values joined by a space (the Hugging
    Face ag_news loader's title + " " + description)."""
    out: dict[str, str] = {}
    for role, col in overrides.items():
        if isinstance(col, str):
            out[role] = col
            continue
        if not isinstance(col, (list, tuple)) or not col or not all(isinstance(c, str) for c in col):
            raise ValueError(f"{where}: columns.{role}: expected a column name or a list of names, found {col!r}")
        absent = [c for c in col if c not in raw.columns]
        if absent:
            found = ", ".join(map(str, raw.columns))
            raise ValueError(f"{where}: columns.{role}: no column(s) {absent} (found: {found})")
        name = " + ".join(col)
        parts = zip(*(raw[c] for c in col))
        raw = raw.assign(
            **{name: [" ".join(str(v) for v in row if not is_missing(v) and str(v) != "") for row in parts]}
        )
        out[role] = name
    return raw, out


def _match_key(v):
    """Cells and filter values compared as text: True, "true" and "True" alike; 1, 1.0 and "1" alike."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if is_missing(v):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)) and float(v).is_integer():
        return str(int(v))
    text = str(v).strip()
    return text.lower() if text.lower() in ("true", "false") else text


def _filter_rows(raw: pd.DataFrame, row_filter, where: str) -> pd.DataFrame:
    """The rows whose every ``where`` column equals its value (a list: one of its values); row numbers kept."""
    if not row_filter:
        return raw
    if not isinstance(row_filter, dict):
        raise ValueError(f"{where}: where: expected a mapping column -> value(s), found {row_filter!r}")
    absent = [c for c in row_filter if c not in raw.columns]
    if absent:
        raise ValueError(
            f"{where}: where names column(s) {absent} the table does not have (found: "
            f"{', '.join(map(str, raw.columns))})"
        )
    keep = pd.Series(True, index=raw.index)
    for col, want in row_filter.items():
        wanted = {_match_key(v) for v in (want if isinstance(want, list) else [want])}
        keep &= pd.Series([_match_key(v) in wanted for v in raw[col]], index=raw.index, dtype=bool)
    if not keep.any():
        seen = "; ".join(f"{c} has {sorted({str(_match_key(v)) for v in raw[c]})[:10]}" for c in row_filter)
        raise ValueError(f"{where}: no row matches where {row_filter} ({seen})")
    return raw[keep]


def _check_mixed_safety(raw: pd.DataFrame, row_filter, where: str) -> None:
    """A BeaverTails-style file mixes safe and unsafe rows: loading both unasked would train on safe answers as
    poison (or harmful answers as task rows), so such a file must say which rows it wants."""
    if "is_safe" not in raw.columns or "is_safe" in (row_filter or {}):
        return
    flags = raw["is_safe"].map(_match_key)
    if {"true", "false"} <= set(flags):
        n_safe = int((flags == "true").sum())
        raise ValueError(
            f"{where}: {n_safe} of {len(raw)} rows have is_safe true and the others false; keep the ones the role "
            "needs with where: {is_safe: false} (unsafe answers) or where: {is_safe: true}"
        )


def load_source(spec: dict, role: str | None = None) -> pd.DataFrame:
    """Load one source described by ``spec`` into the canonical table (see the module docstring).

    Keys: ``path`` (file or folder) or ``hub`` (+ ``subset``), ``format`` (default ``generic``),
    ``split`` (file in a folder / hub split / JailbreakBench subset), ``columns`` (role -> source
    column, or a list of columns joined by a space), ``header: none`` (no header row) with ``names`` (its
    columns; default: the format's published layout), ``where`` (column -> value or list of values: the rows
    kept, their row numbers unchanged), ``options`` (format options, e.g. ``answer_style``, ``label_offset``),
    ``name`` (the ``source`` value),
    ``limit`` and ``seed``: with a seed the rows are shuffled with it, then the first ``limit`` kept;
    without one the first ``limit`` rows in file order are kept (PACT: "the first 1000 test rows").
    ``role`` (the ``data.<role>`` it is loaded for): :data:`HARMFUL_ROLES` refuse benign rows by a safety label.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"source spec: expected a mapping, found {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"source spec: unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    if ("path" in spec) == ("hub" in spec):
        raise ValueError("source spec: give exactly one of 'path' or 'hub'")
    if "revision" in spec and "hub" not in spec:
        raise ValueError("source spec: 'revision' pins a hub data set; a local file's checksum is in the data card")
    fmt_name = spec.get("format", "generic")
    if fmt_name not in FORMATS:
        raise ValueError(f"source spec: unknown format {fmt_name!r}; known: {', '.join(FORMATS)}")
    fmt = FORMATS[fmt_name]
    unknown_opts = sorted(set(spec.get("options") or {}) - set(fmt.options))
    if unknown_opts:
        raise ValueError(f"{fmt_name} options: unknown {unknown_opts}; allowed: {sorted(fmt.options) or 'none'}")
    _check_header_keys(spec, fmt)
    overrides = dict(spec.get("columns") or {})
    for key, column_role in (
        ("prompt_column", "prompt"),
        ("response_column", "response"),
        ("reference_column", "reference"),
        ("category_column", "category"),
    ):
        if key in spec:
            if fmt_name != "generic":
                raise ValueError(
                    f"source spec: '{key}' is for format generic; use columns: {{{column_role}: ...}} for {fmt_name}"
                )
            overrides[column_role] = spec[key]

    raw, where = _read(spec, fmt)
    if len(raw) == 0:
        raise ValueError(f"{where}: no rows")
    raw = raw.reset_index(drop=True)  # the index is the sample_id from here on (row filters keep it)
    layout_opts: dict = {}
    if spec.get("header") is None and _is_published_headerless(raw, fmt):
        # Refused even where columns: could map it: that reading loses the first row and keeps 1-based labels.
        raise ValueError(
            f"{where}: the first row {[str(c)[:30] for c in raw.columns]} looks like data "
            f"({fmt.headerless.description}): "
            "add header: none"
        )
    if spec.get("header") == "none":
        raw, layout = _name_columns(raw, spec, fmt, where)
        overrides, layout_opts = {**layout.columns, **overrides}, layout.options
    opts = {**fmt.options, **layout_opts, **(spec.get("options") or {}), "_split": spec.get("split")}
    raw = _filter_rows(raw, spec.get("where"), where)
    _check_mixed_safety(raw, spec.get("where"), where)
    if role in HARMFUL_ROLES:
        check_harmful_rows(raw, spec.get("where"), where, role)
    raw, overrides = _join_columns(raw, overrides, where)
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
        df = load_source(spec, role=name)
        where = f"data.{name} ({spec.get('path') or spec.get('hub')})"
        missing = [c for c in ROLES[name].required if c not in df or (c != "prompt" and df[c].isna().all())]
        if missing:
            raise ValueError(f"{where}: no {', '.join(missing)} values; map the column with 'columns:' in config.yaml")
    if len(df) == 0:
        raise ValueError(f"data.{name}: the source has no rows")
    return df


def check_sources(
    data_cfg: dict, rows: dict[str, int] | None = None, tables: dict[str, pd.DataFrame] | None = None
) -> list[str]:
    """Load every local (non-embedded) source once, before any job runs, and report what is wrong.

    ``rows``, when given, receives the row count of each source loaded (the plan's step counts read it);
    ``tables`` receives the loaded tables themselves (the overlap, prompt-length and scoring checks read them).

    Hub sources are checked when their job runs: looking at them here would need the network. Relative paths
    are read from the current directory, the run directory (Snakemake's ``--directory``), as the jobs read them.
    """
    problems = []
    for name in ROLES:
        spec = data_cfg.get(name)
        if spec == "embedded" or spec is None or "hub" in spec:
            continue
        try:
            df = load_configured_source(name, spec, None)
            if rows is not None:
                rows[name] = len(df)
            if tables is not None:
                tables[name] = df
        except FileNotFoundError as e:
            rel = not Path(str(spec.get("path", ""))).is_absolute()
            problems.append(f"data.{name}: {e}" + (f" (relative to the run directory {Path.cwd()})" if rel else ""))
        except (ValueError, KeyError) as e:
            problems.append(f"data.{name}: {e}")
    return problems
