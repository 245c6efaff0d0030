"""Checks of ``utility_benchmarks`` before any job: task names the harness knows, and settings that go together.

Torch-free and lm-eval-free until a task name must be looked up: the config check imports this module on every
plan. Indexing lm-eval's ~14,000 task files takes ~7 s, so the known names are cached per lm-eval version and
``include_path`` under ``.snakemake/tokensafe/`` of the run directory; configs that name only ``tokensafe_task``
never index at all.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path

CUSTOM_TASK = (
    "tokensafe_task"  # tokensafe.eval.utility.harness.CUSTOM_TASK (that module imports pandas; this one must not)
)
CACHE_DIR = Path(".snakemake") / "tokensafe"
# Every refusal of a task says how to run without the stage: no lm_eval job is planned without tasks.
TURN_OFF = "or set utility_benchmarks.tasks: [] to turn the stage off"


def _include_stamp(include_path: str | None) -> str:
    """What the index depends on besides lm-eval's version: the include folder's YAML files and their mtimes."""
    if not include_path:
        return ""
    files = sorted(Path(include_path).rglob("*.yaml"))
    return json.dumps([[str(f), f.stat().st_mtime_ns] for f in files])


def known_tasks(include_path: str | None = None) -> set[str]:
    """Every task, group and tag name lm-eval's TaskManager knows (with ``include_path``), cached on disk."""
    version = importlib.metadata.version("lm_eval")
    key = hashlib.sha256(f"{version}\0{include_path}\0{_include_stamp(include_path)}".encode()).hexdigest()[:16]
    cache = CACHE_DIR / f"lm_eval_tasks-{key}.json"
    if cache.is_file():
        return set(json.loads(cache.read_text()))
    from lm_eval.tasks import TaskManager

    names = sorted(TaskManager(include_path=include_path).all_tasks)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # concurrent dry runs: each writes its own, then renames
    tmp.write_text(json.dumps(names))
    os.replace(tmp, cache)
    return set(names)


def benchmark_problems(bench: dict, task_metric: str = "number") -> list[str]:
    """What is wrong with ``utility_benchmarks`` (empty when nothing is)."""
    problems = []
    key = "utility_benchmarks"
    tasks = list(bench.get("tasks") or [])
    if bench.get("fewshot_as_multiturn") and not bench.get("apply_chat_template"):
        problems.append(f"{key}.fewshot_as_multiturn needs {key}.apply_chat_template: true (few-shot turns are chat)")
    include = bench.get("include_path")
    if include and not Path(include).is_dir():
        problems.append(f"{key}.include_path = {include!r}: no such folder (relative paths: the run directory)")
        include = None
    if CUSTOM_TASK in tasks and task_metric != "number":
        problems.append(
            f"{key}.tasks: {CUSTOM_TASK} scores numeric answers (data.task_metric number); with task_metric "
            f"{task_metric!r} give a task of your own through {key}.include_path, {TURN_OFF}"
        )
    others = [t for t in tasks if t != CUSTOM_TASK]
    if others:
        try:
            known = known_tasks(include)
        except ImportError:
            return problems + [f"{key}.tasks {others}: lm-eval is not installed (make setup installs it), {TURN_OFF}"]
        for t in others:
            if t not in known:
                close = difflib.get_close_matches(t, sorted(known), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                problems.append(f"{key}.tasks: lm-eval knows no task, group or tag {t!r}{hint}; {TURN_OFF}")
    return problems
