"""Reading the files public data sets ship as: .csv, .tsv, .jsonl, .json and .parquet, single files or shards."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd

TABLE_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
# GLUE publishes SST-2 as .tsv; a copy renamed .csv is read comma-separated, into one column or a parse error.
TSV_HINT = "it looks tab-separated: rename it to .tsv (a .tsv file is read tab-separated)"


def looks_tab_separated(line: str) -> bool:
    """A line split by tabs rather than commas (SST-2's 'sentence<TAB>label', its sentences holding commas)."""
    return "\t" in line and line.count("\t") >= line.count(",")


def load_table(path: str | Path, headerless: bool = False) -> pd.DataFrame:
    """Read a .csv, .tsv, .jsonl, .json or .parquet file (chosen by extension) into a DataFrame.

    An empty file gives an empty DataFrame; the caller decides whether that is an error.
    ``.json`` holds a list of records or a dict of columns; a ``.json`` file that is really JSON
    lines (common for Hugging Face exports) is read as such. ``.tsv`` is read as the GLUE files are published:
    tab-separated with no quoting (a sentence may hold a ``"``). A malformed row is an error naming the file and
    the line. ``headerless`` (.csv/.tsv only) reads the first row as data: the columns are numbered 0, 1, ...
    and every cell is kept as the text it is (an AG News title "NA" stays "NA", an empty field is "").
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in TABLE_EXTENSIONS:
        raise ValueError(
            f"{p}: unsupported table extension {ext or '(none)'!r}; allowed: {', '.join(TABLE_EXTENSIONS)}"
        )
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    if headerless and ext not in (".csv", ".tsv"):
        raise ValueError(f"{p}: header: none is for .csv/.tsv files; a {ext} file names its own columns")
    if p.stat().st_size == 0:
        return pd.DataFrame()
    if ext in (".csv", ".tsv"):
        # GLUE's .tsv files quote nothing; csv's default quoting would swallow tabs after a '"'.
        kw: dict = {"sep": "\t", "quoting": csv.QUOTE_NONE} if ext == ".tsv" else {}
        if headerless:
            kw.update(header=None, dtype=str, keep_default_na=False)
        try:
            return pd.read_csv(p, **kw)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
        except pd.errors.ParserError as err:
            hint = f"; {TSV_HINT}" if ext == ".csv" and looks_tab_separated(_first_line(p)) else ""
            raise ValueError(f"{p}: not a valid {ext[1:].upper()} table ({_parser_message(err)}){hint}") from None
    if ext == ".parquet":
        return pd.read_parquet(p)
    text = p.read_text(encoding="utf-8")
    if ext == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if "Extra data" not in str(err):
                raise ValueError(f"{p}: not valid JSON ({err})") from None
            return _records_from_lines(p, text)
        if isinstance(data, list):
            return pd.DataFrame.from_records(data) if data else pd.DataFrame()
        if isinstance(data, dict):
            return pd.DataFrame(data)
        raise ValueError(f"{p}: expected a JSON list of records or a dict of columns, found {type(data).__name__}")
    return _records_from_lines(p, text)


def _first_line(p: Path) -> str:
    with p.open(encoding="utf-8", errors="replace") as fh:
        return fh.readline()


def _parser_message(err: Exception) -> str:
    """pandas' tokenizer message without its C-engine prefix: 'Expected 2 fields in line 3, saw 4'."""
    text = str(err).strip()
    m = re.search(r"Expected \d+ fields in line \d+, saw \d+", text)
    return m.group(0) if m else text


def _records_from_lines(p: Path, text: str) -> pd.DataFrame:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}:{lineno}: not valid JSON ({err})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{p}:{lineno}: expected a JSON object per line, found {type(rec).__name__}")
        records.append(rec)
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


def table_in_dir(path: Path, split: str | None) -> Path | list[Path]:
    """The table for ``split`` in a folder: ``<split>.<ext>``, else Hugging Face shards ``<split>-*``."""
    if not split:
        raise ValueError(f"{path} is a folder: give 'split' to pick the file (e.g. split: test -> test.jsonl)")
    for ext in TABLE_EXTENSIONS:
        if (path / f"{split}{ext}").is_file():
            return path / f"{split}{ext}"
    shards = sorted(f for f in path.rglob(f"{split}-*") if f.suffix.lower() in TABLE_EXTENSIONS)
    if shards:  # Hugging Face parquet exports: data/test-00000-of-00001.parquet
        return shards
    raise FileNotFoundError(f"{path}: no {split}.<{'|'.join(e[1:] for e in TABLE_EXTENSIONS)}> or {split}-* shards")
