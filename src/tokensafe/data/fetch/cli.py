"""The command: read a preset, fetch and build each entry's files, report what is missing (gated steps)."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tokensafe.data.fetch.catalog import CATALOG, GATED_MODEL_PREFIXES, entry_for
from tokensafe.data.fetch.lockfile import (
    LOCK,
    digest,
    expected_sha256,
    load_lock,
    up_to_date,
    wanted_revision,
)
from tokensafe.data.fetch.transport import FetchError, GatedError, download
from tokensafe.data.fetch.upstream import Entry
from tokensafe.data.roles import ROLES
from tokensafe.io import atomic_path, sha256_file, write_json

REPO_ROOT = Path(__file__).resolve().parents[4]


def resolve_preset(preset: str) -> Path:
    """A path to a preset file, or a name under config/presets/ (of the current directory, else this checkout)."""
    p = Path(preset)
    if p.is_file():
        return p
    for root in (Path.cwd(), REPO_ROOT):
        candidate = root / "config" / "presets" / f"{preset}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted(f.stem for f in (REPO_ROOT / "config" / "presets").glob("*.yaml"))
    raise FetchError(f"preset {preset!r}: no such file, and no config/presets/{preset}.yaml (known: {known})")


def preset_paths(preset: Path, alternatives: bool = False) -> list[tuple[str, str]]:
    """(role, path) of every local data file the preset reads; with ``alternatives`` also those of its
    commented-out ``# <role>: {path: ...}`` lines."""
    cfg = yaml.safe_load(preset.read_text()) or {}
    found: list[tuple[str, str]] = []
    for role in ROLES:
        spec = (cfg.get("data") or {}).get(role)
        if isinstance(spec, dict) and "path" in spec:
            found.append((role, str(spec["path"])))
    if alternatives:
        pattern = re.compile(rf"^\s*#\s*({'|'.join(ROLES)}):\s*(\{{.*)$")
        for line in preset.read_text().splitlines():
            m = pattern.match(line)
            if not m:
                continue
            try:  # YAML drops the trailing '# ...' comment of the uncommented line
                spec = yaml.safe_load(f"{m.group(1)}: {m.group(2)}")[m.group(1)]
            except yaml.YAMLError:
                continue  # prose that happens to start like a data line
            if isinstance(spec, dict) and "path" in spec:
                found.append((m.group(1), str(spec["path"])))
    seen, out = set(), []
    for role, path in found:
        if path not in seen:
            seen.add(path)
            out.append((role, path))
    return out


def gated_models(preset: Path) -> list[tuple[str, str]]:
    models = (yaml.safe_load(preset.read_text()) or {}).get("models") or {}
    return [
        (k, str(v).removeprefix("hub:"))
        for k, v in models.items()
        if isinstance(v, str) and str(v).removeprefix("hub:").startswith(GATED_MODEL_PREFIXES)
    ]


def plan_entries(paths: list[tuple[str, str]], catalog: dict[str, Entry]) -> list[Entry]:
    """The entries producing ``paths``, with the entries they need first; a path no entry makes is an error."""
    unknown = [(r, p) for r, p in paths if entry_for(p, catalog) is None]
    if unknown:
        raise FetchError(
            "no catalogue entry produces "
            + "; ".join(f"data.{r}.path {p!r}" for r, p in unknown)
            + " (tokensafe.data.fetch.catalog lists what can be fetched; give the file by hand or change the path)"
        )
    order: list[Entry] = []

    def visit(entry: Entry, stack: tuple[str, ...]) -> None:
        if entry in order:
            return
        if entry.name in stack:
            raise FetchError(f"catalogue entries need each other: {' -> '.join((*stack, entry.name))}")
        for need in entry.needs:
            dep = entry_for(need, catalog)
            if dep is None:
                raise FetchError(f"catalogue entry {entry.name} needs {need!r}, which no entry produces")
            visit(dep, (*stack, entry.name))
        order.append(entry)

    for _, path in paths:
        visit(entry_for(path, catalog), ())
    return order


# --------------------------------------------------------------------------------------------------
# One entry


@dataclass
class Report:
    fetched: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    gated: list[GatedError] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # entry name, message


def fetch_entry(entry: Entry, dest: Path, lock: dict, update: bool, log=print) -> list[str]:
    """Download, check, build and write one entry's files atomically; update ``lock`` in memory. Returns the
    files written. Raises FetchError (nothing of this entry is written) on any problem."""
    needs: dict[str, Path | None] = {}
    for need in entry.needs:
        p = dest / need
        if not p.exists() and need not in entry.optional_needs:
            raise FetchError(f"{entry.name}: needs {need}, which is missing")
        needs[need] = p if p.exists() else None
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=_mkdir(dest / "data")) as tmp:
        local: dict[str, Path] = {}
        sources = []
        for name, up in entry.sources.items():
            revision = wanted_revision(up, lock, update)
            log(f"  {up.describe()} @ {revision or up.ref + ' (resolving)'}")
            path, commit = download(up, revision, Path(tmp))
            got = sha256_file(path)
            want = expected_sha256(up, commit, lock)
            if want is not None and got != want:
                raise FetchError(
                    f"{up.describe()} @ {commit}: sha256 {got} does not match the expected {want}; nothing written "
                    f"for {', '.join(entry.files)} (a changed upstream file or a corrupt download: check it, then "
                    "update the catalogue's sha256 or delete the lock's record)"
                )
            local[name] = path
            sources.append(
                {
                    "name": name,
                    "kind": up.kind,
                    "repo": up.repo,
                    "path": up.path,
                    "revision": commit,
                    "revision_pinned_in_catalogue": up.revision is not None,
                    "sha256": got,
                    "license": up.license,
                    "url": up.page,
                }
            )
        try:
            outputs, details = entry.build(local, needs, entry.params)
        except (ValueError, KeyError, OSError) as e:
            raise FetchError(f"{entry.name}: could not build {', '.join(entry.files)}: {e}") from None
    written = {o.path for o in outputs}
    if written != set(entry.files):
        raise FetchError(f"{entry.name}: the build wrote {sorted(written)}, the catalogue lists {list(entry.files)}")
    inputs = {need: digest(dest / need) for need in entry.needs}
    licenses = sorted({s["license"] for s in sources}) or ["as the files it is derived from"]
    for o in outputs:
        with atomic_path(dest / o.path) as tmp:
            tmp.write_bytes(o.data)
        lock["files"][o.path] = {
            "entry": entry.name,
            "sources": sources,
            "sha256": hashlib.sha256(o.data).hexdigest(),
            "rows": o.rows,
            "preparation": entry.preparation,
            "license": "; ".join(licenses),
            **({"inputs": inputs} if inputs else {}),
            **({"details": details} if details else {}),
        }
    return sorted(written)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------------
# The command


def gated_steps(page: str, what: str, preset: str) -> str:
    return (
        f"{what} is gated on the Hugging Face hub. To get it:\n"
        f"  1. open {page}, log in, and accept its terms of access;\n"
        "  2. create a read token (https://huggingface.co/settings/tokens) and give it to this shell:\n"
        "       export HF_TOKEN=hf_...        (or: hf auth login)\n"
        f"  3. rerun: python -m tokensafe.data.fetch {preset}    (or: make data PRESET={preset})"
    )


def run(
    preset: str,
    dest: Path,
    *,
    force: bool = False,
    update: bool = False,
    alternatives: bool = False,
    catalog: dict[str, Entry] | None = None,
    out=print,
) -> int:
    catalog = CATALOG if catalog is None else catalog
    path = resolve_preset(preset)
    entries = plan_entries(preset_paths(path, alternatives), catalog)
    lock = load_lock(dest)
    report = Report()
    failed_entries: set[str] = set()
    for entry in entries:
        required = [n for n in entry.needs if n not in entry.optional_needs]
        blocked = [n for n in required if entry_for(n, catalog).name in failed_entries and not (dest / n).exists()]
        if blocked:
            failed_entries.add(entry.name)
            report.failed.append((entry.name, f"needs {', '.join(blocked)}, which could not be fetched"))
            continue
        if not force and up_to_date(entry, dest, lock, update):
            report.current.extend(entry.files)
            continue
        out(f"{entry.name}: {', '.join(entry.files)}")
        try:
            report.fetched.extend(fetch_entry(entry, dest, lock, update, log=out))
        except GatedError as e:
            failed_entries.add(entry.name)
            report.gated.append(e)
            out(gated_steps(e.upstream.page, e.upstream.describe(), preset))
            continue
        except FetchError as e:
            failed_entries.add(entry.name)
            report.failed.append((entry.name, str(e)))
            out(f"  FAILED: {e}")
            continue
        write_json(lock, dest / LOCK)
    return summarise(report, path, preset, dest, entries, failed_entries, out)


def summarise(report, path, preset, dest, entries, failed_entries, out) -> int:
    out(
        f"\n{len(report.fetched)} file(s) written, {len(report.current)} already up to date"
        + (f"; lock: {dest / LOCK}" if report.fetched else "")
    )
    models = gated_models(path)
    if models:
        token = bool(os.environ.get("HF_TOKEN")) or _stored_token()
        for key, model in models:
            what = f"models.{key} {model} (not downloaded here: the jobs load it)"
            if token:
                out(f"{what}: gated; accept its terms at https://huggingface.co/{model} for the token's account")
            else:
                out(gated_steps(f"https://huggingface.co/{model}", what, preset))
    missing = [f for e in entries if e.name in failed_entries for f in e.files]
    if not missing:
        return 0
    out("\nMissing (the preset cannot run until they are there):")
    for e in report.gated:
        out(f"  gated: {e.upstream.describe()}")
    for name, msg in report.failed:
        out(f"  {name}: {msg}")
    for f in missing:
        out(f"  {f}")
    return 1


def _stored_token() -> bool:
    try:
        from huggingface_hub import get_token  # noqa: PLC0415

        return get_token() is not None
    except Exception:  # noqa: BLE001 - no token store is no token
        return False


def list_preset(preset: str, dest: Path, alternatives: bool = False, catalog=None, out=print) -> int:
    """What the preset reads, where each file comes from and at which revision, and whether it is on disk."""
    catalog = CATALOG if catalog is None else catalog
    path = resolve_preset(preset)
    paths = preset_paths(path, alternatives)
    entries = plan_entries(paths, catalog)
    lock = load_lock(dest)
    out(f"{path}: {len(paths)} data path(s)")
    for role, p in paths:
        out(f"  data.{role}: {p}  <- {entry_for(p, catalog).name}")
    out("")
    for entry in entries:
        state = "up to date" if up_to_date(entry, dest, lock, False) else "to fetch"
        out(f"{entry.name} [{state}]: {', '.join(entry.files)}")
        out(f"  preparation: {entry.preparation}")
        for up in entry.sources.values():
            rev = up.revision or wanted_revision(up, lock, False)
            how = (
                "pinned"
                if up.revision
                else ("locked at first fetch" if rev else f"{up.ref}, resolved and locked at first fetch")
            )
            gated = ", gated" if up.gated else ""
            out(f"  {up.describe()} @ {rev or up.ref} ({how}{gated}); license: {up.license}")
    for key, model in gated_models(path):
        out(f"models.{key}: {model} is gated (https://huggingface.co/{model}); the jobs download it")
    return 0


def main(argv: list[str] | None = None, catalog: dict[str, Entry] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tokensafe.data.fetch",
        description="Fetch the public data files a preset reads, at pinned revisions, with checksums "
        "(recorded in DIR/data/SOURCES.lock.json).",
    )
    parser.add_argument("preset", help="a preset name (config/presets/<name>.yaml) or a path to a config file")
    parser.add_argument("--dest", default=".", metavar="DIR", help="the run directory (default: the current one)")
    parser.add_argument("--force", action="store_true", help="fetch and rewrite every file, even if up to date")
    parser.add_argument(
        "--update",
        action="store_true",
        help="move revisions the catalogue does not pin to what upstream serves now (and rewrite those files)",
    )
    parser.add_argument("--all", action="store_true", help="also the preset's commented-out data alternatives")
    parser.add_argument("--list", action="store_true", help="say what would be fetched, and from where; fetch nothing")
    args = parser.parse_args(argv)
    dest = Path(args.dest)
    try:
        if args.list:
            return list_preset(args.preset, dest, args.all, catalog)
        return run(args.preset, dest, force=args.force, update=args.update, alternatives=args.all, catalog=catalog)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
