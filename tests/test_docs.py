"""README and docs/: README stays a short front door, every relative link resolves (file and heading), every page is
reachable from README, nothing points outside the repository, and the rerun table is the one the matrix renders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workflow_utils import REPO

README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
# What a reader of the repository does not have: paths beside the checkout, tracker numbers.
OUTSIDE = re.compile(r"\.\./shared|/work/|\bissues? ?#?\d+", re.I)


def links(path: Path) -> list[str]:
    """The link targets of a markdown file, outside fenced code blocks."""
    return LINK.findall(FENCE.sub("", path.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped (but - and _), spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    body = FENCE.sub("", path.read_text())
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", body, re.M)}


def test_slug_follows_github():
    assert slug("Prompt lengths (`tokensafe.data.lengths`)") == "prompt-lengths-tokensafedatalengths"
    assert slug("The LLM judge: GPT-4o or a local server") == "the-llm-judge-gpt-4o-or-a-local-server"
    assert slug("Utility benchmarks (lm-evaluation-harness)") == "utility-benchmarks-lm-evaluation-harness"


def test_readme_is_a_short_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert "make run" in text.split("\n## ")[0] and "make test" in text.split("\n## ")[0]  # the two commands first


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert broken == []


def test_every_docs_page_is_reachable_from_readme():
    seen, todo = set(), [README]
    while todo:
        page = todo.pop()
        for target in links(page):
            file = target.partition("#")[0]
            dest = (page.parent / file).resolve() if file and not re.match(r"[a-z]+:", target) else None
            if dest is not None and dest.suffix == ".md" and dest.exists() and dest not in seen:
                seen.add(dest)
                todo.append(dest)
    assert sorted(p.name for p in PAGES if p.resolve() not in seen) == []


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.relative_to(REPO).as_posix())
def test_nothing_points_outside_the_repository(page):
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(page.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []


def test_reruns_page_shows_the_rerun_matrix():
    from rerun_matrix import PAGE, embedded, load_matrix, render

    assert embedded(PAGE.read_text()) == render(load_matrix()), "run: .venv/bin/python tests/rerun_matrix.py --write"
