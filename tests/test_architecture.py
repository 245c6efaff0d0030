"""The package's layout is the one docs/architecture.md describes, its import rules hold, and the page's claims
about the workflow (which room each rule's script calls, what the Snakefile reads, how a job starts) are true."""

import ast
import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "tokensafe"
DOC = REPO / "docs" / "architecture.md"
SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)

# Which rooms each room may import (docs/architecture.md, "What each room may import"). A room is a
# top-level module or package of tokensafe; methods' families are rooms of their own.
ALLOWED = {
    "chat": set(),
    "io": set(),
    "modelref": set(),
    "rerun": set(),
    "report_cells": set(),
    "runtime": {"runtime"},
    # eval.utility.benchmark_tasks: lm-eval task names; methods.registry: the method names, the schema's method enum
    "config": {"modelref", "data", "world", "eval", "plan", "methods"},
    # runtime.numerics: the CPU pin the jobs inherit and its label in the settings; rerun.stage_keys: the keys each
    # preparation stage's settings hold; eval.generation.vllm_backend: the vLLM interpreter check (all torch-free)
    "plan": {"plan", "config", "modelref", "methods", "data", "world", "eval", "runtime", "rerun"},
    # chat, modelref: prompt lengths as the model sees them; methods: which roles the methods read (torch-free)
    "data": {"data", "io", "eval", "chat", "modelref", "methods"},
    # eval: the LLM-judge stand-in answers the published judge prompts (eval.llm_judge) and labels task answers
    # right or wrong with the run's task metric (eval.utility.answers)
    "world": {"world", "chat", "train", "eval"},
    "train": {"train", "chat", "io", "runtime", "modelref"},
    # the registry reads the ladder (and train.loop for a type hint), and rerun.stage_keys for a PACT rung's settings
    "methods": {"methods", "train", "rerun"},
    "methods.sft": {"methods", "train"},
    "eval": {"eval", "chat", "io", "train", "runtime", "data"},  # data.lengths: the prompt-length check
    "stages": None,  # anything
}
FAMILY_ALLOWED = {"train", "chat", "io", "rerun", "eval", "runtime", "methods", "report_cells"}
FAMILIES = {"toss", "pact", "baselines"}  # workflow/rules/<family>.smk <-> tokensafe/methods/<family>/
# A stage two families share lives in train (docs/architecture.md): the loss dumps of TOSS and constrained SFT.
SHARED_FAMILY_STAGES = {"tokensafe.train.loss_dumps"}
# Within eval, what each concern may import besides itself: rooms and other eval subpackages (eval.<name>).
EVAL_ALLOWED = {
    "generation": {"chat", "data", "runtime"},  # data.lengths: the prompt-length check; runtime.jobsocket
    "safety_judges": {"io", "eval.generation"},  # the guard judge through vLLM
    "llm_judge": {"io", "runtime", "eval.statistics"},  # the win rate's interval; the server's key
    "utility": {"io", "train", "eval.generation"},  # lm-eval on the vLLM engine settings, the model's dtype
    "statistics": set(),
}


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
    # __init__.py and __main__.py are Python's own names for a package and its command (python -m)
    names = Counter(p.name for p in MODULES if p.name not in ("__init__.py", "__main__.py"))
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


def workflow_imports() -> str:
    """The ``from tokensafe... import ...`` statements of the Snakefile and its rule files, as Python source."""
    found = []
    for path in [REPO / "Snakefile", *RULE_FILES]:
        found += re.findall(r"^from tokensafe[\w.]* import (?:\([^)]*\)|.*)$", path.read_text(), re.M)
    assert found, "no tokensafe import in the workflow"
    return "\n".join(found)


def test_eval_is_split_by_concern_and_each_concern_imports_only_what_the_architecture_allows():
    subs = sorted(p.name for p in (PKG / "eval").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert subs == sorted(EVAL_ALLOWED)
    assert [p.name for p in (PKG / "eval").glob("*.py")] == ["__init__.py"]  # every module is in a concern
    bad = []
    for sub in subs:
        for p in sorted((PKG / "eval" / sub).glob("*.py")):
            for imp in imports(p):
                parts = imp.split(".")[1:]
                there = ".".join(parts[:2]) if parts[0] == "eval" else parts[0]
                if there not in (f"eval.{sub}", "eval") and there not in EVAL_ALLOWED[sub]:
                    bad.append(f"{module_name(p)} imports {imp}")
    assert bad == []


def test_planning_modules_do_not_import_torch():
    """What the Snakefile reads when it plans (its own imports: the registry, the ladder, ...) imports no torch:
    importing it there costs seconds per run."""
    import subprocess
    import sys

    code = (
        workflow_imports()
        + "\nimport sys, tokensafe.methods.registry, tokensafe.methods.pact.ladder, tokensafe.data.roles, "
        "tokensafe.rerun.stage_keys, tokensafe.config, tokensafe.plan.run_settings, tokensafe.plan.runs, "
        "tokensafe.plan.scheduling, tokensafe.plan.job_environment, tokensafe.plan.llm_judge_runs\n"
        "print('torch' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_the_snakefile_reads_the_modules_the_page_says():
    """docs/architecture.md: the Snakefile reads the registry and the ladder when it plans."""
    import subprocess
    import sys

    code = (
        workflow_imports()
        + "\nimport sys\nprint(' '.join(sorted(m for m in sys.modules if m.startswith('tokensafe'))))"
    )
    read = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert {"tokensafe.methods.registry", "tokensafe.methods.pact.ladder"} <= set(read)
    assert "the Snakefile reads them when it plans" in DOC.read_text()


def test_every_rule_script_calls_its_stage_with_keywords_only():
    """A stage function takes keyword-only arguments, and each script passes them by name (one hop, no order)."""
    import importlib
    import inspect

    checked = 0
    for script in SCRIPTS:
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
            if module == "tokensafe.runtime.job":
                continue  # start_job(log): the job's start-up, not a stage
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
    assert checked >= len(SCRIPTS) - 1  # report.py calls several section builders and render


def test_every_script_starts_its_job_first():
    """docs/architecture.md, "How a job runs": a script's first statements start the job, before any other import."""
    for script in SCRIPTS:
        body = ast.parse(script.read_text()).body
        assert ast.unparse(body[0]) == "from tokensafe.runtime.job import start_job", script.name
        assert ast.unparse(body[1]) == "start_job(snakemake.log[0])", script.name


def rule_scripts() -> dict[str, str]:
    """script file name -> the rule file (without .smk) whose rule runs it."""
    out = {}
    for path in RULE_FILES:
        for script in re.findall(r"^\s+script:\s*\n\s+\"\.\./scripts/(\w+\.py)\"", path.read_text(), re.M):
            out[script] = path.stem
    return out


def stage_modules(script: Path) -> set[str]:
    """The modules of the stage a script calls: its run_stage targets, else the tokensafe functions it calls."""
    tree = ast.parse(script.read_text())
    imported = {
        a.asname or a.name: node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tokensafe.")
        for a in node.names
    }
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    targets = {c.args[0].value.partition(":")[0] for c in calls if c.func.id == "run_stage"}
    return targets or {imported[c.func.id] for c in calls if c.func.id in imported} - {"tokensafe.runtime.job"}


def test_each_rule_calls_the_room_the_page_names():
    """docs/architecture.md: a method family's rules call tokensafe.methods.<family> (the loss dumps two families
    share: tokensafe.train.loss_dumps), every other rule tokensafe.stages."""
    scripts = rule_scripts()
    assert sorted(scripts) == sorted(s.name for s in SCRIPTS)  # every script is some rule's, and found here
    bad = []
    for script in SCRIPTS:
        family = scripts[script.name]
        for module in stage_modules(script):
            if family in FAMILIES:
                ok = module.startswith(f"tokensafe.methods.{family}.") or module in SHARED_FAMILY_STAGES
            else:
                ok = module.startswith("tokensafe.stages.")
            if not ok:
                bad.append(f"{script.name} ({family}.smk) calls {module}")
    assert bad == []
    doc = DOC.read_text()
    for module in SHARED_FAMILY_STAGES:
        assert f"`{module.removeprefix('tokensafe.')}`" in doc


def test_the_rooms_table_lists_every_room():
    """Every top-level module and package of tokensafe is a row of "What each room may import", and has import
    rules here."""
    doc = DOC.read_text()
    table = doc.split("## What each room may import", 1)[1].split("\n\n", 2)[1]
    named = set()
    for line in table.splitlines()[2:]:
        first = line.split("|")[1]
        named |= {re.split(r"[/.]", n)[0] for n in re.findall(r"`([^`]+)`", first)}
    rooms = {
        p.stem if p.is_file() else p.name for p in PKG.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    rooms.discard("__init__")
    assert rooms - named == set(), "rooms missing from the table"
    assert named - rooms == set(), "the table names rooms that do not exist"
    assert rooms <= set(ALLOWED), "rooms without import rules in this test"


def module_graph(top_level_only: bool) -> dict[str, set[str]]:
    """tokensafe module -> the tokensafe modules it imports (at import time only, or anywhere in its code)."""
    mods = {module_name(p): p for p in MODULES}
    graph = {}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        deps = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tokensafe"):
                deps |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module for a in node.names
                }
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[mod] = {d for d in deps if d in mods and d != mod and not mod.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module."""
    index, low, stack, found = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    """No two modules import each other, directly or round a loop, at import time or anywhere in the code."""
    graph = module_graph(top_level_only=False)
    assert "tokensafe.world.llm_judge" in graph["tokensafe.stages.world_llm_judge"]  # the graph sees imports
    assert "tokensafe.eval.generation.vllm_backend" in graph["tokensafe.stages.generation"]  # inside functions too
    assert "tokensafe.eval.utility.harness" in graph["tokensafe.stages.benchmarks"]  # `from package import module`
    assert cycles(module_graph(top_level_only=True)) == []
    assert cycles(graph) == []
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}  # the finder itself
    assert cycles(graph) == [{"a", "b", "c"}]
