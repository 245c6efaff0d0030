"""Downloads: GitHub files over HTTPS at a commit, hub files through huggingface_hub."""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tokensafe.data.fetch.upstream import Upstream

GITHUB_RAW = "https://raw.githubusercontent.com"
GITHUB_API = "https://api.github.com"


class FetchError(Exception):
    """A file could not be fetched or built (network, checksum, content): the message says which and why."""


class GatedError(FetchError):
    """The hub refused a gated file (no token, or terms not accepted)."""

    def __init__(self, upstream: Upstream, reason: str):
        super().__init__(f"{upstream.describe()} is gated and was refused ({reason})")
        self.upstream = upstream


def _urlopen(url: str, headers: dict[str, str] | None = None):
    req = urllib.request.Request(url, headers={"User-Agent": "tokensafe-data-fetch", **(headers or {})})
    try:
        return urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        raise FetchError(f"GET {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise FetchError(f"GET {url}: {getattr(e, 'reason', e)} (no network? a mirror: TOKENSAFE_GITHUB_RAW)") from None


def github_commit(up: Upstream) -> str:
    """The commit ``up.ref`` points at now (GitHub's API, plain-SHA media type)."""
    base = os.environ.get("TOKENSAFE_GITHUB_API", GITHUB_API).rstrip("/")
    with _urlopen(f"{base}/repos/{up.repo}/commits/{up.ref}", {"Accept": "application/vnd.github.sha"}) as r:
        sha = r.read().decode().strip()
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise FetchError(f"GitHub {up.repo}@{up.ref}: expected a commit SHA, got {sha[:80]!r}")
    return sha


def github_download(up: Upstream, revision: str, tmpdir: Path) -> Path:
    base = os.environ.get("TOKENSAFE_GITHUB_RAW", GITHUB_RAW).rstrip("/")
    out = tmpdir / f"{len(list(tmpdir.iterdir()))}-{Path(up.path).name}"
    with _urlopen(f"{base}/{up.repo}/{revision}/{up.path}") as r, out.open("wb") as fh:
        shutil.copyfileobj(r, fh, 1 << 20)
    return out


def hub_download(up: Upstream, revision: str | None) -> tuple[Path, str]:
    """The file from huggingface_hub's cache (downloaded if needed) and the commit it was read at."""
    from huggingface_hub import hf_hub_download  # noqa: PLC0415 - only where a hub file is fetched
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError  # noqa: PLC0415

    try:
        path = hf_hub_download(
            up.repo,
            up.path,
            repo_type="dataset",
            revision=revision,
            # Read here, not at huggingface_hub's import, so that a caller's environment is the one used.
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            token=os.environ.get("HF_TOKEN") or None,
        )
    except GatedRepoError as e:
        raise GatedError(up, _first_line(e)) from None
    except RepositoryNotFoundError as e:
        if up.gated:  # without a token the hub answers a gated repo as not found (401)
            raise GatedError(up, _first_line(e)) from None
        raise FetchError(f"{up.describe()}: {_first_line(e)}") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if up.gated and status in (401, 403):
            raise GatedError(up, _first_line(e)) from None
        raise FetchError(f"{up.describe()}: {_first_line(e)}") from None
    except Exception as e:  # connection errors and huggingface_hub's offline/cache errors
        raise FetchError(f"{up.describe()}: {type(e).__name__}: {_first_line(e)}") from None
    parts = Path(path).parts
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else revision
    return Path(path), commit


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def download(up: Upstream, revision: str | None, tmpdir: Path) -> tuple[Path, str]:
    """The upstream file on disk and the commit it was read at (``revision`` None: resolved now)."""
    if up.kind == "github":
        commit = revision or github_commit(up)
        return github_download(up, commit, tmpdir), commit
    if up.kind == "hub":
        return hub_download(up, revision)
    raise FetchError(f"catalogue: unknown source kind {up.kind!r} for {up.repo}")
