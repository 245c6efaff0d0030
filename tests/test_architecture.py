"""The package's layout is the one docs/architecture.md describes, and its import rules hold."""

import ast
import re
from collections import Counter
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "tokensafe"
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)

# Which rooms each room may import (docs/architecture.md, "What each room may import"). A room is a
# top-level module or package of tokensafe; methods' families are rooms of their own.
ALLOWED = {
    "chat": set(),
    "io": set(),
    "modelref": set(),
    "rerun": set(),
    "runtime": {"runtime"},
    # eval.benchmark_tasks: lm-eval task names; methods.registry: the method names, the schema's method enum
    "config": {"modelref", "data", "world", "eval", "plan", "methods"},
    # runtime.numerics: the CPU pin the jobs inherit and its label in the settings; rerun.stage_keys: the keys each
    # preparation stage's settings hold; eval.vllm_backend: the vLLM interpreter check (all torch-free)
    "plan": {"plan", "config", "modelref", "methods", "data", "world", "eval", "runtime", "rerun"},
    # chat, modelref: prompt lengths as the model sees them; methods: which roles the methods read (torch-free)
    "data": {"data", "io", "eval", "chat", "modelref", "methods"},
    "world": {"world", "chat", "train"},
    "train": {"train", "chat", "io", "runtime", "modelref"},
    # the registry reads the ladder (and train.loop for a type hint), and rerun.stage_keys for a PACT rung's settings
    "methods": {"methods", "train", "rerun"},
    "methods.sft": {"methods", "train"},
    "eval": {"eval", "chat", "io", "train", "runtime", "data"},  # data.lengths: the prompt-length check
    "stages": None,  # anything
}
FAMILY_ALLOWED = {"train", "chat", "io", "rerun", "eval", "runtime", "methods"}


def room(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[0] == "methods" and len(parts) > 1 and parts[1] not in ("registry",):
        return f"methods.{parts[1]}"
    return parts[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tokensafe"):
            out |= {node.module} if node.module != "tokensafe" else {f"tokensafe.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("tokensafe")}
    return out


def test_no_two_modules_share_a_file_name():
    names = Counter(p.name for p in MODULES if p.name != "__init__.py")
    assert [n for n, c in names.items() if c > 1] == []


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PKG)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_the_documented_tree_is_the_package():
    doc = DOC.read_text()
    tree = doc.split("```", 2)[1]
    for p in MODULES:
        if p.name == "__init__.py":
            continue
        rel = p.relative_to(PKG)
        # A module is named in the tree by its file name, or its folder is (world/, eval/, runtime/, rerun/).
        assert p.name in tree or f"{rel.parts[0]}/" in tree, f"{rel} is not in docs/architecture.md"
    for name in re.findall(r"([a-z_]+\.py)", tree):
        assert any(p.name == name for p in MODULES), f"docs/architecture.md names {name}, which does not exist"


def test_rooms_import_only_what_the_architecture_allows():
    bad = []
    for p in MODULES:
        mod = module_name(p)
        if mod == "tokensafe":
            continue
        here = room(mod)
        allowed = ALLOWED.get(here, FAMILY_ALLOWED if here.startswith("methods.") else None)
        for imp in imports(p):
            there = room(imp) if imp != "tokensafe" else "tokensafe"
            if there == "stages" and here != "stages":
                bad.append(f"{mod} imports {imp}: nothing imports stages")
            elif here.startswith("methods.") and there.startswith("methods.") and there != here:
                bad.append(f"{mod} imports {imp}: a method family never imports another")
            elif allowed is not None and there != here and there.split(".")[0] not in allowed and there not in allowed:
                bad.append(f"{mod} imports {imp}")
    assert bad == []


def test_planning_modules_do_not_import_torch():
    """The Snakefile reads the registry and the ladder when it plans; importing torch there costs seconds per run."""
    import subprocess
    import sys

    code = (
        "import sys, tokensafe.methods.registry, tokensafe.methods.pact.ladder, tokensafe.data.roles, "
        "tokensafe.rerun.stage_keys, tokensafe.config, tokensafe.plan.run_settings, tokensafe.plan.runs, "
        "tokensafe.plan.scheduling, tokensafe.plan.job_environment, tokensafe.plan.llm_judge_runs; "
        "print('torch' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_every_rule_script_calls_its_stage_with_keywords_only():
    """A stage function takes keyword-only arguments, and each script passes them by name (one hop, no order)."""
    import importlib
    import inspect

    scripts = sorted((PKG.parents[1] / "workflow" / "scripts").glob("*.py"))
    checked = 0
    for script in scripts:
        tree = ast.parse(script.read_text())
        imported = {
            a.asname or a.name: node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tokensafe.")
            for a in node.names
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported):
                continue
            name, module = node.func.id, imported[node.func.id]
            if module == "tokensafe.runtime.logs":
                continue  # setup(log): the job's start-up, not a stage
            fn = getattr(importlib.import_module(module), name)
            if name == "run_stage":  # run_stage("module:function", {keywords}, n_gpus=...)
                target = node.args[0].value
                mod, _, fname = target.partition(":")
                fn, name = getattr(importlib.import_module(mod), fname), fname
                assert isinstance(node.args[1], ast.Call) and not node.args[1].args, f"{script.name}: {name}"
            else:
                assert not node.args, f"{script.name} passes {name} positional arguments"
            params = inspect.signature(fn).parameters.values()
            assert all(p.kind is p.KEYWORD_ONLY for p in params), f"{module}.{name} is not keyword-only"
            checked += 1
    assert checked >= len(scripts) - 1  # report.py calls several section builders and render
