"""The rerun matrix: what a dry run plans after one config change on a finished run (tests/data/rerun_matrix.yaml).

Used by tests/test_e2e_methods.py (every row is planned and compared) and to render the table of docs/reruns.md
(tests/test_docs.py checks that the page shows what this renders):

    .venv/bin/python tests/rerun_matrix.py --table      # prints the markdown table
    .venv/bin/python tests/rerun_matrix.py --write      # replaces it in docs/reruns.md (between its markers)

After a change that adds jobs to many rows (a new rule every run has), the planned jobs can be written back
instead of compared (then review the diff of tests/data/rerun_matrix.yaml: every changed row is a claim):

    TOKENSAFE_WRITE_RERUN_MATRIX=1 .venv/bin/python -m pytest tests/test_e2e_methods.py -k rerun_matrix
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import yaml

from workflow_utils import REPO, job_stats, snakemake, write_config

MATRIX = Path(__file__).parent / "data" / "rerun_matrix.yaml"
PAGE = REPO / "docs" / "reruns.md"
START, END = "<!-- rerun matrix: tests/rerun_matrix.py --write -->", "<!-- end of rerun matrix -->"
# The table's job groups, in pipeline order; a rule in none of them is listed under "other".
GROUPS = (
    ("world", lambda rule: rule.startswith("world_")),
    ("data", lambda rule: rule in ("source_table", "data_overlap", "data_card", "mix_finetune_set")),
    (
        "preparation",
        lambda rule: rule.startswith(("toss_", "pact_")) or rule in ("aligned_losses", "subspace_projectors"),
    ),
    ("training", lambda rule: rule == "finetune"),
    (
        "evaluation",
        lambda rule: rule in ("generate", "judge", "judge_classifier", "lm_eval", "llm_rubrics", "llm_win_rate"),
    ),
)


def schema_leaves() -> list[str]:
    """Every leaf key of the config schema, dotted (objects with properties are walked into)."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    defs = schema.get("$defs", {})
    out = []

    def walk(node, path):
        if "$ref" in node:
            node = defs[node["$ref"].split("/")[-1]]
        if node.get("type") == "object" and "properties" in node:
            for k, v in node["properties"].items():
                walk(v, path + [k])
        else:
            out.append(".".join(path))

    walk(schema, [])
    return out


def load_matrix() -> list[dict]:
    return yaml.safe_load(MATRIX.read_text())


def _value(v):
    """Data paths in the table are relative to the repository root (``tests/data/public``, ``tests/data/*.yaml``)."""
    if isinstance(v, dict) and isinstance(v.get("path"), str) and not Path(v["path"]).is_absolute():
        return {**v, "path": str(REPO / v["path"])}
    if isinstance(v, str) and v.startswith("tests/data/"):  # a file the setting names (plan.throughput)
        return str(REPO / v)
    return v


def apply(cfg: dict, row: dict) -> dict:
    """The config with the row's changes: ``set`` (dotted keys; "APPEND:x" / "REMOVE:x" edit a list) and ``drop``."""
    c = copy.deepcopy(cfg)
    for key, value in row.get("set", {}).items():
        *parents, last = key.split(".")
        node = c
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(value, str) and value.startswith(("APPEND:", "REMOVE:")):
            op, item = value.split(":", 1)
            node[last] = node[last] + [item] if op == "APPEND" else [x for x in node[last] if x != item]
        else:
            node[last] = _value(value)
    for key in row.get("drop", []):
        *parents, last = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        node.pop(last, None)
    return c


def plan(workdir: Path, cfg: dict, name: str) -> dict:
    """The dry run's jobs per rule, or {"refused": message} when the config is refused before planning."""
    proc = snakemake(workdir, write_config(cfg, workdir, name), "-n", "--nolock", check=False)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        # A config check's message starts "<config file>: invalid configuration:"; its first problem follows.
        lines = [
            ln.strip() for ln in out.splitlines() if ln.strip() and not ln.strip().endswith("invalid configuration:")
        ]
        at = next((i for i, ln in enumerate(lines) if ln.startswith("WorkflowError")), None)
        return {"refused": (lines[at + 1] if at is not None and at + 1 < len(lines) else lines[-1]).lstrip("- ")}
    return job_stats(out)


def _flow(plan: dict, old: dict) -> str:
    """A plan as one flow mapping: the rules of the old plan in their order, then the new ones."""
    order = [k for k in old if k in plan] + [k for k in plan if k not in old]
    if "refused" in plan:
        return "{refused: " + json.dumps(plan["refused"]) + "}"
    return "{" + ", ".join(f"{k}: {plan[k]}" for k in order) + "}"


def write_plans(observed: dict[str, dict]) -> list[str]:
    """Replace the ``plan:`` of each row whose key is in ``observed`` (comments and layout kept); returns the keys
    whose plan changed."""
    rows = {r["key"]: r["plan"] for r in load_matrix()}
    lines = MATRIX.read_text().splitlines()
    out, key, changed, skipping = [], None, [], False
    for line in lines:
        if skipping and line.startswith("    "):
            continue  # the old plan's continuation lines
        skipping = False
        if line.startswith("- key: "):
            key = line[len("- key: ") :].strip()
        if line.startswith("  plan:") and key in observed:
            if observed[key] != rows[key]:
                changed.append(key)
            out.append(f"  plan: {_flow(observed[key], rows[key])}")
            skipping = True
            continue
        out.append(line)
    MATRIX.write_text("\n".join(out) + "\n")
    return changed


def _compress(keys: list[str], leaves: list[str]) -> list[str]:
    """``a.b.*`` for every section (a dotted prefix) whose leaves are all in ``keys``, largest sections first."""
    keys = list(keys)
    prefixes = sorted(
        {".".join(k.split(".")[:i]) for k in leaves for i in range(1, k.count(".") + 1)}, key=lambda p: p.count(".")
    )
    for p in prefixes:
        under = [k for k in leaves if k.startswith(p + ".")]
        if len(under) > 1 and all(k in keys for k in under):
            first = keys.index(under[0])
            keys = [k for k in keys if k not in under]
            keys.insert(min(first, len(keys)), p + ".*")
    return keys


def _jobs(jobs: dict[str, int]) -> str:
    """Planned jobs, one line per group (``<br>`` inside a table cell), each rule with its count."""
    lines = []
    for name, member in (*GROUPS, ("other", lambda rule: True)):
        mine = sorted(k for k in jobs if member(k))
        if mine:
            lines.append(f"{name}: " + ", ".join(f"{k} {jobs[k]}" for k in mine))
            jobs = {k: n for k, n in jobs.items() if k not in mine}
    return "<br>".join(lines)


def render(rows: list[dict]) -> str:
    """The table of docs/reruns.md: the changes that plan the same jobs, grouped, with the jobs by stage group
    (summary, report and all are planned whenever anything runs and are left out). A change the config check
    refuses points to a numbered note below the table that quotes the message."""
    groups: dict[str, list[str]] = {}
    notes: list[str] = []
    for r in rows:
        p = r["plan"]
        if "refused" in p:
            if p["refused"] not in notes:
                notes.append(p["refused"])
            what = f"stops before planning (note {notes.index(p['refused']) + 1})"
        else:
            jobs = {k: n for k, n in p.items() if k not in ("summary", "report", "all")}
            what = _jobs(jobs) if jobs else ("summary and report" if p else "nothing")
        groups.setdefault(what, []).append(r.get("label", r["key"]))
    leaves = schema_leaves()
    lines = ["| change | planned jobs |", "|---|---|"]
    for what, keys in groups.items():
        lines.append(f"| {', '.join(k if ' ' in k else f'`{k}`' for k in _compress(keys, leaves))} | {what} |")
    if notes:
        lines += ["", "Notes: the config check's message, which stops the run before any job is planned."]
        lines += ["", *(f"{i}. {n}" for i, n in enumerate(notes, 1))]
    return "\n".join(lines)


def embedded(page: str) -> str | None:
    """The table between the page's markers (None without them)."""
    if START not in page or END not in page:
        return None
    return page.split(START, 1)[1].split(END, 1)[0].strip()


def write(page_path: Path = PAGE) -> None:
    """Replace the table between the markers of ``page_path`` with what the matrix renders now."""
    page = page_path.read_text()
    if embedded(page) is None:
        raise SystemExit(f"{page_path}: no {START} ... {END} markers")
    head, rest = page.split(START, 1)
    tail = rest.split(END, 1)[1]
    page_path.write_text(f"{head}{START}\n{render(load_matrix())}\n{END}{tail}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        print(render(load_matrix()))
    elif sys.argv[1:] == ["--write"]:
        write()
    else:
        raise SystemExit(__doc__)
