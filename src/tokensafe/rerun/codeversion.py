"""Code versions: a hash of the ``tokensafe`` modules that a stage script imports, for its rule's params.

Snakemake reruns a job when its params change, and it sees a rule's script but not the package modules
the script calls, so upgrading the package would leave results made by older code in place without a
word. Each rule therefore carries ``code=code_version(<its script>)``: the hash of every ``tokensafe``
module the script imports (or names as a ``"module:function"`` stage target), followed transitively
through their imports (also those inside functions),
read from their syntax trees without docstrings, so that comments, formatting and docstrings rerun
nothing while any change to what the code does reruns exactly the stages that import it.

Modules that run a job but define none of its outputs are left out (``INFRASTRUCTURE``): the job's log
and garbage-collector set-up, the fork server (an end-to-end test shows it changes no output byte), the
per-run key in front of the local judge server (it refuses requests, it answers none), the multi-GPU launcher,
and the CPU-numerics pin (its effect is in every model stage's params already).
This is a params trigger: ``--rerun-triggers`` without ``params`` (e.g. ``--rerun-triggers mtime``)
turns code versions off, like every other settings change.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

PACKAGE = "tokensafe"
TARGET = re.compile(r"tokensafe(\.\w+)+:\w+")
INFRASTRUCTURE = frozenset(
    {
        "tokensafe.runtime.job",
        "tokensafe.runtime.jobserver",
        "tokensafe.runtime.jobsocket",
        "tokensafe.runtime.httpkey",
        "tokensafe.runtime.launch",
        "tokensafe.runtime.numerics",
    }
)


@lru_cache(maxsize=None)
def _package_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # the package's own __init__ only: nothing heavy is imported
    return Path(spec.origin).parent


@lru_cache(maxsize=None)
def _module_file(name: str) -> str | None:
    """The source file of a ``tokensafe`` module, found by its path (importing it could be slow)."""
    parts = name.split(".")[1:]
    base = _package_dir().joinpath(*parts)
    candidates = [base.with_suffix(".py"), base / "__init__.py"] if parts else [base / "__init__.py"]
    return next((str(p) for p in candidates if p.is_file()), None)


def _is_module(name: str) -> bool:
    return _module_file(name) is not None


def _imports(tree: ast.AST, current: str | None) -> set[str]:
    """``tokensafe`` modules named by the import statements of ``tree`` (``current``: the module's own name,
    for relative imports)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and current:
                parts = current.split(".")[: -node.level]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and TARGET.fullmatch(node.value):
            found.add(
                node.value.split(":")[0]
            )  # a stage named for tokensafe.runtime.launch.run_stage: "module:function"
    return {n for n in found if (n == PACKAGE or n.startswith(PACKAGE + ".")) and _is_module(n)}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def _parsed(path: str, name: str | None) -> tuple[frozenset[str], str]:
    """A file's ``tokensafe`` imports and its syntax tree without docstrings (dumped), read once per run."""
    tree = ast.parse(Path(path).read_text(), filename=path)
    imports = frozenset(_imports(tree, name))
    return imports, ast.dump(_strip_docstrings(tree))


def closure(script: str) -> list[str]:
    """The ``tokensafe`` modules (outside INFRASTRUCTURE) that ``script`` imports, directly or not, sorted."""
    todo = list(_parsed(script, None)[0])
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += _parsed(_module_file(name), name)[0] - seen
    return sorted(seen - INFRASTRUCTURE)


def code_version(script: str) -> str:
    """12 hex digits over the syntax trees (without docstrings) of ``closure(script)``."""
    h = hashlib.sha256()
    for name in closure(script):
        h.update(name.encode() + b"\0" + _parsed(_module_file(name), name)[1].encode() + b"\0")
    return h.hexdigest()[:12]


def clear_caches() -> None:
    """Forget resolved paths and parsed files (for a process that edits the package, e.g. a test)."""
    for fn in (_package_dir, _module_file, _parsed):
        fn.cache_clear()
