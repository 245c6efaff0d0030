"""Adding a method is what docs/architecture.md says: its two code blocks (a module, a registry entry), applied to a
copy of the package (nothing is written under src/), plan and run the new method with no other change."""

import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from workflow_utils import REPO, micro_config, planned_jobs, snakemake, write_config

DOC = REPO / "docs" / "architecture.md"


def doc_blocks() -> tuple[str, str, str, str]:
    """(module path, module code, registry entry line, method name) from the doc's "Adding a method"."""
    section = DOC.read_text().split("## Adding a method", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    module = next(b for b in blocks if re.match(r"# src/tokensafe/methods/(?!registry)\w+\.py\n", b))
    entry = next(b for b in blocks if b.startswith("# src/tokensafe/methods/registry.py"))
    path = module.splitlines()[0][2:]
    line = next(x for x in entry.splitlines()[1:] if x.strip())
    name = re.match(r'\s*"(\w+)": Method\(', line).group(1)
    return path, module, line, name


@pytest.fixture(scope="module")
def package_with_new_method(tmp_path_factory):
    """A copy of src/tokensafe with the doc's module and registry entry; PYTHONPATH for it."""
    root = tmp_path_factory.mktemp("pkg")
    shutil.copytree(
        REPO / "src" / "tokensafe", root / "src" / "tokensafe", ignore=shutil.ignore_patterns("__pycache__")
    )
    (root / "workflow").symlink_to(REPO / "workflow")  # the schema beside the package, as in the checkout
    path, module, line, name = doc_blocks()
    (root / path).write_text(module)
    registry = root / "src" / "tokensafe" / "methods" / "registry.py"
    text = registry.read_text()
    head = "METHODS: dict[str, Method] = {\n"
    assert text.count(head) == 1
    registry.write_text(text.replace(head, head + line + "\n"))
    env = {"PYTHONPATH": str(root / "src")}
    where = subprocess.run(
        [sys.executable, "-c", "import tokensafe; print(tokensafe.__file__)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(root)), where
    return name, env


def config(name: str) -> dict:
    cfg = micro_config()
    cfg["methods"] = ["sft", name]
    cfg["poison_ratios"] = [0.1]
    return cfg


def test_the_doc_adds_a_method_the_checkout_does_not_have():
    from tokensafe.methods.registry import METHODS

    path, _, _, name = doc_blocks()
    assert name not in METHODS and not (REPO / path).exists()


def test_the_new_method_plans_like_sft(package_with_new_method, tmp_path):
    name, env = package_with_new_method
    jobs = planned_jobs(tmp_path, write_config(config(name), tmp_path), env=env)
    assert jobs["finetune"] == 2 and jobs["generate"] == jobs["judge"] == 3  # sft, the new method, initial
    assert jobs["llm_win_rate"] == 2  # the new method and initial, against sft


def test_without_the_entry_the_method_is_refused(tmp_path):
    name = doc_blocks()[3]
    proc = snakemake(tmp_path, write_config(config(name), tmp_path), "-n", check=False)
    assert proc.returncode != 0 and f'methods[1] = "{name}": must be one of sft, toss' in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_the_new_method_runs_on_the_micro_world(package_with_new_method, tmp_path):
    name, env = package_with_new_method
    snakemake(tmp_path, write_config(config(name), tmp_path), "--cores", "2", env=env)
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert sorted(summary["method"]) == sorted(["initial", "sft", name])
    assert (tmp_path / "results" / "runs" / name / "p0.1" / "s1" / "adapter").is_dir()
    # It trains like sft (the same loss, data, recipe and seed): the same answers, byte for byte on one machine.
    gens = {m: pd.read_parquet(tmp_path / f"results/runs/{m}/p0.1/s1/generations.parquet") for m in ("sft", name)}
    assert gens[name]["response"].tolist() == gens["sft"]["response"].tolist()
    assert name in (tmp_path / "results" / "report.md").read_text()
