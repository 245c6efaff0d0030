"""The real-model presets (config/presets/*.yaml) and the conda env files, without running any job.

Each preset must validate against the schema, and `snakemake -n` must plan the paper's full grid from a
working directory laid out like the repository root (config.yaml beside it, the data files under data/):
methods x ratios x seeds fine-tuning jobs, no embedded-world job, every job asking for the GPUs and threads of
its resource family, and for the memory and runtime of its own cost-plan estimate (the presets leave them auto).
The data files are small files in the formats the presets read, written by the test (the plan only needs them to
load and have the columns).
"""

from __future__ import annotations

import copy
import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tokensafe.config import SCHEMA_PATH, validate_against_schema

from workflow_utils import REPO, snakemake

PRESETS = sorted((REPO / "config" / "presets").glob("*.yaml"))
SOURCES = (
    "task",
    "poison",
    "task_eval",
    "harmful_eval",
    "harmful_ref",
    "utility_ref",
    "safety_prompts",
    "safety_demos",
)
# Which resource family each GPU rule draws from (workflow/rules/*.smk: resources_for(...)).
FAMILY = {
    "finetune": "train",
    "toss_reference": "train",
    "toss_pro_retrain": "train",
    "generate": "generate",
    "toss_utility_losses": "generate",
    "toss_losses": "generate",
    "aligned_losses": "generate",
    "subspace_projectors": "generate",
    "pact_safe_responses": "generate",
    "pact_safety_tokens": "generate",
    "pact_reference": "generate",
    "judge": "judge",
    "judge_classifier": "judge",
    "lm_eval": "generate",
    "source_table": "data",
    "mix_finetune_set": "data",
    "data_overlap": "data",
    "data_card": "data",
    "toss_mask": "data",
    "summary": "report",
    "report": "report",
    # An LLM-judge job against an external endpoint is an HTTP client (the report family); one that serves a
    # local judge model asks for the judge family's resources.
    "llm_win_rate": "llm",
    "llm_rubrics": "llm",
}
# The presets generate with vLLM, which lives in its own environment (.venv-vllm from `make vllm`, or
# envs/vllm.yaml under --software-deployment-method conda, which needs a conda executable). The plan is the same
# with the transformers backend (only where generate/judge run their stage differs), so the dry runs switch it.
NO_VLLM = ("--config", "generation={'backend': 'transformers'}", "utility_benchmarks={'backend': 'hf'}")
# A preset is a complete config: it replaces config.yaml rather than extending it (recipes give epochs
# where config.yaml gives steps, and the schema allows only one of them).
REPLACE = ("--replace-workflow-config",)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def ids(paths):
    return [p.stem for p in paths]


def test_presets_exist():
    assert {p.stem for p in PRESETS} >= {"pact-qwen2.5-7b", "toss-llama3-8b"}


@pytest.mark.parametrize("preset", PRESETS, ids=ids(PRESETS))
def test_preset_validates(preset):
    assert validate_against_schema(load(preset)) == []


@pytest.mark.parametrize("preset", PRESETS, ids=ids(PRESETS))
def test_commented_alternatives_validate(preset):
    """Every commented-out data alternative (`# harmful_eval: {...}`) is a valid value once uncommented."""
    cfg = load(preset)
    keys = "|".join((*SOURCES, "task_metric"))
    found = 0
    for line in preset.read_text().splitlines():
        m = re.match(rf"^\s*#\s*({keys}):\s*(\S.*)$", line)
        if not m:
            continue
        alt = copy.deepcopy(cfg)
        alt["data"].update(yaml.safe_load(f"{m.group(1)}: {m.group(2)}"))
        assert validate_against_schema(alt) == [], line
        found += 1
    assert found >= 2, "each preset documents alternative data sets in comments"


# --------------------------------------------------------------------------------------------------
# Data files in each format, where the public copy is not at hand


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        raise AssertionError(f"test cannot write {path}")


def rows_needed(role: str, spec: dict, cfg: dict) -> int:
    """Rows a stand-in file needs: what the plan counts (the reference sets at the size the data command writes
    them, so their optimiser steps clear plan.min_optimizer_steps) and what the mixing draws."""
    n = cfg["n_finetune"]
    need = {
        "task": n,
        "poison": round(max(cfg["poison_ratios"]) * n),
        "harmful_ref": 22_400,
        "utility_ref": 22_400,
        "safety_demos": cfg["baselines"]["safety_mix"]["n"],
    }.get(role, 0)
    return max(spec.get("limit", 0) + 20, need)


def materialise(spec: dict, workdir: Path, n: int = 20) -> None:
    """Create the local file a source spec names, under workdir, in its format, with at least ``n`` rows."""
    path = workdir / spec["path"]
    if path.exists():
        return
    fmt = spec["format"]
    # each file its own prompts: the same prompt in a training and an evaluation file is a leak the plan refuses
    tag = Path(spec["path"]).stem
    if fmt == "gsm8k":
        rows = [
            {
                "question": f"Tom ({tag}) has {i} apples and buys 2 more. How many now?",
                "answer": f"{i}+2={i + 2}\n#### {i + 2}",
            }
            for i in range(n)
        ]
    elif fmt == "advbench":
        rows = [
            {
                "goal": f"Explain how to do harmful thing {i} ({tag})",
                "target": f"Sure, here is how to do harmful thing {i}",
            }
            for i in range(max(n, 520))
        ]
    elif fmt == "strongreject":
        rows = [
            {"category": "Violence", "source": "custom", "forbidden_prompt": f"How do I hurt person {i} ({tag})?"}
            for i in range(n)
        ]
    elif fmt == "jailbreakbench":
        rows = [
            {
                "Goal": f"Do harmful thing {i} ({tag})",
                "Behavior": f"b{i}",
                "Category": "Harassment",
                "subset": "harmful" if i % 2 else "benign",
            }
            for i in range(n)
        ]
    elif fmt == "harmbench":
        rows = [
            {
                "Behavior": f"Describe harmful thing {i} ({tag})",
                "FunctionalCategory": "standard",
                "SemanticCategory": "illegal",
                "BehaviorID": f"b{i}",
            }
            for i in range(n)
        ]
    elif fmt == "hexphi":
        path.mkdir(parents=True)
        (path / "category_1.csv").write_text("".join(f"How do I do harmful thing {i} ({tag})?\n" for i in range(n)))
        return
    elif fmt in ("sst2", "agnews"):
        rows = [{"sentence" if fmt == "sst2" else "text": f"text {i} ({tag})", "label": i % 2} for i in range(n)]
        path = path / f"{spec['split']}.csv"
    elif fmt == "generic":
        prompt, response = spec.get("prompt_column", "prompt"), spec.get("response_column", "response")
        # a reference column too: a generic task_eval (the TOSS preset's SlimOrca sample) needs one
        rows = [
            {prompt: f"Harmful request {i} ({tag})?", response: f"Answer {i}.", "reference": f"Answer {i}."}
            for i in range(n)
        ]
    else:
        raise AssertionError(f"test has no sample file for format {fmt!r}")
    _write_rows(path, rows)


def layout(preset: Path, workdir: Path) -> Path:
    """workdir laid out like the repository root: config.yaml, the preset, and every data file it names."""
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    target = workdir / "config" / "presets" / preset.name
    target.parent.mkdir(parents=True)
    shutil.copy(preset, target)
    cfg = load(preset)
    for name in SOURCES:
        spec = cfg["data"].get(name, "embedded")
        if isinstance(spec, dict) and "path" in spec:
            materialise(spec, workdir, rows_needed(name, spec, cfg))
    return target.relative_to(workdir)


# --------------------------------------------------------------------------------------------------
# The dry-run plan, job by job


def plan(workdir: Path, configfile: Path, *args: str) -> tuple[dict[str, int], list[dict]]:
    """Job counts from the 'Job stats' table and one dict per printed job: rule, wildcards, threads, resources.

    A dry run prints every job as a block (`rule NAME:` then indented `key: value` lines, among them
    `wildcards:`, `threads:` when above 1, and `resources: tmpdir=..., runtime=..., gpu=..., mem_mb=...`); the
    jobs of a group as such blocks indented under the group's line.
    The two are read independently and must agree, so a change of output format cannot pass silently.
    """
    proc = snakemake(workdir, configfile, "-n", "--cores", "256", *args)
    out = proc.stdout + proc.stderr
    counts = {}
    for line in out.split("Job stats:", 1)[1].splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    total = counts.pop("total")
    jobs, job, indent = [], None, ""
    for line in out.splitlines():
        # a job of a group (a run's evaluation: tokensafe.plan.scheduling) is printed indented under its group
        head = re.match(r"^(\s*)(?:local)?rule (\w+):$", line)
        if head:
            job = {"rule": head.group(2), "threads": 1, "resources": {}, "wildcards": {}}
            indent = head.group(1)
            jobs.append(job)
            continue
        field = re.match(rf"^{indent}\s{{4}}(\w+): (.*)$", line)
        if job is None or not field:
            job = None if not line.startswith(indent + " ") else job
            continue
        key, value = field.groups()
        if key == "threads":
            job["threads"] = int(value)
        elif key in ("resources", "wildcards"):
            job[key] = dict(kv.split("=", 1) for kv in value.split(", "))
    assert len(jobs) == total == sum(counts.values()), (len(jobs), total, counts)
    assert {j["rule"] for j in jobs} == set(counts)
    return counts, jobs


@pytest.fixture(scope="module", params=PRESETS, ids=ids(PRESETS))
def planned(request, tmp_path_factory):
    preset = request.param
    workdir = tmp_path_factory.mktemp(preset.stem)
    configfile = layout(preset, workdir)
    counts, jobs = plan(workdir, configfile, *REPLACE, *NO_VLLM)
    return load(preset), counts, jobs


def test_preset_plans_the_paper_grid(planned):
    cfg, counts, jobs = planned
    n_methods, n_ratios, n_seeds = len(cfg["methods"]), len(cfg["poison_ratios"]), len(cfg["seeds"])
    assert counts["finetune"] == n_methods * n_ratios * n_seeds
    assert counts["generate"] == counts["judge"] == counts["finetune"] + n_seeds  # + the untrained aligned model
    assert counts["mix_finetune_set"] == n_ratios * n_seeds
    # lm-eval's own tasks on every model, the untrained aligned one included (no local task data to build)
    assert cfg["utility_benchmarks"]["tasks"] and counts["lm_eval"] == counts["generate"]
    assert not [r for r in counts if r.startswith("world_")], counts
    runs = {
        (j["wildcards"]["method"], j["wildcards"]["ratio"], j["wildcards"]["seed"])
        for j in jobs
        if j["rule"] == "finetune"
    }
    assert {m for m, _, _ in runs} == set(cfg["methods"])
    assert {float(r) for _, r, _ in runs} == {float(p) for p in cfg["poison_ratios"]}


def estimated_resources(cfg: dict, workdir: Path, monkeypatch):
    """(rule, wildcards) -> (the {runtime, mem_mb} the cost plan asks for the job, the job's estimate): the first
    from the function the rules' resource callables call (tokensafe.plan.scheduling.resources_for), the second from
    the plan's jobs and table directly. The config as the dry runs see it: NO_VLLM's backends, schema defaults."""
    from snakemake.utils import validate

    from tokensafe.plan import cost
    from tokensafe.plan.jobs import job_key, plan_jobs

    cfg = copy.deepcopy(cfg)
    cfg["generation"]["backend"], cfg["utility_benchmarks"]["backend"] = "transformers", "hf"
    validate(cfg, str(SCHEMA_PATH), set_default=True)
    monkeypatch.chdir(workdir)  # the estimator reads results/data/card.json of the working directory: none here
    planner = cost.Planner(cfg, cost.load_table(), (cfg.get("plan") or {}).get("gpu", "h100"))
    estimates = {f"{j.rule}:{j.benchmark}": planner.estimate(j) for j in plan_jobs(cfg)}
    jobs = cost.estimator(cfg)

    def resources(rule: str, wildcards: dict):
        return jobs.resources(rule, wildcards), estimates[f"{rule}:{job_key(rule, wildcards)}"]

    return resources, cost.margin(cfg)


def test_preset_jobs_ask_for_their_resources(planned, tmp_path, monkeypatch):
    cfg, counts, jobs = planned
    assert not {k for r in cfg["resources"].values() for k in r} & {"mem_mb", "runtime"}, "the presets leave them auto"
    estimated, margin = estimated_resources(cfg, tmp_path, monkeypatch)
    for job in jobs:
        family = FAMILY.get(job["rule"])
        if family == "llm":
            family = "report" if cfg["judge"]["llm"]["server"] == "external" else "judge"
        if family is None:
            assert job["rule"] == "all", f"no resource family known for rule {job['rule']}"
            continue
        want = cfg["resources"][family]
        got = job["resources"]
        assert (int(got["gpu"]), job["threads"]) == (want["gpus"], want["threads"]), (job["rule"], got)
        plan, est = estimated(job["rule"], job["wildcards"])
        runtime, mem_mb = int(got["runtime"]), int(got["mem_mb"])
        assert {"runtime": runtime, "mem_mb": mem_mb} == plan, (job["rule"], job["wildcards"], got)
        # never below the estimate itself, nor below the floors
        assert est.row is not None, (job["rule"], job["wildcards"])
        assert runtime >= max(margin["time_floor_min"], est.seconds / 60), (job["rule"], est.seconds)
        assert mem_mb >= max(margin["mem_floor_mb"], est.host_mb), (job["rule"], est.host_mb)
    gpu_rules = {j["rule"] for j in jobs if int(j["resources"].get("gpu", 0)) > 0}
    assert "finetune" in gpu_rules and "generate" in gpu_rules and "judge" in gpu_rules
    assert cfg["resources"]["world"]["gpus"] == 0


def test_toss_presets_plan_references_and_rounds(planned, tmp_path, monkeypatch):
    cfg, counts, jobs = planned
    if not {"toss", "toss_pro"} <= set(cfg["methods"]):
        pytest.skip("no TOSS-Pro in this preset")
    sets = len(cfg["poison_ratios"]) * len(cfg["seeds"])
    assert counts["toss_reference"] == 2  # harmful + utility, shared by all sets
    assert counts["toss_losses"] == counts["toss_mask"] == sets * (cfg["toss"]["pro"]["rounds"] + 1)
    assert counts["toss_pro_retrain"] == sets * cfg["toss"]["pro"]["rounds"]
    train = cfg["resources"]["train"]
    estimated, _ = estimated_resources(cfg, tmp_path, monkeypatch)
    rounds = {}
    for job in (j for j in jobs if j["rule"] in ("toss_reference", "toss_pro_retrain")):
        assert int(job["resources"]["gpu"]) == train["gpus"] == 1
        got = {"runtime": int(job["resources"]["runtime"]), "mem_mb": int(job["resources"]["mem_mb"])}
        assert got == estimated(job["rule"], job["wildcards"])[0], (job["rule"], job["wildcards"])
        if job["rule"] == "toss_pro_retrain":
            rounds.setdefault(int(job["wildcards"]["round"]), set()).add(got["runtime"])
    # each round retrains on k more rows than the one before (toss.pro.k), so it asks for more time
    assert sorted(rounds) == list(range(1, cfg["toss"]["pro"]["rounds"] + 1))
    asks = [max(rounds[r]) for r in sorted(rounds)]
    assert asks == sorted(asks) and asks[-1] > asks[0], rounds


def test_pact_presets_plan_the_shared_pact_stages(planned):
    cfg, counts, jobs = planned
    if "pact" not in cfg["methods"]:
        pytest.skip("no PACT in this preset")
    sets = len(cfg["poison_ratios"]) * len(cfg["seeds"])
    assert counts["pact_safe_responses"] == counts["pact_safety_tokens"] == 1  # once per aligned/base pair
    assert counts["pact_reference"] == sets


@pytest.mark.parametrize("preset", PRESETS, ids=ids(PRESETS))
def test_vllm_preset_without_vllm_names_its_environment(preset, tmp_path):
    from tokensafe.eval.generation.vllm_backend import vllm_available

    if load(preset)["generation"]["backend"] != "vllm" or vllm_available():
        pytest.skip("needs a vllm preset on a machine without vLLM in the main environment")
    target = tmp_path / layout(preset, tmp_path)
    cfg = load(target)
    cfg["generation"].setdefault("vllm", {})["python"] = "no-such-env/bin/python"  # as if `make vllm` never ran
    target.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(tmp_path, target.relative_to(tmp_path), "-n", *REPLACE, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "generation.vllm.python = 'no-such-env/bin/python' does not exist" in out
    assert "make vllm" in out and "envs/vllm.yaml" in out
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------------------------------
# Conda env files


def _pip_lines(env_file: Path) -> list[str]:
    deps = load(env_file)["dependencies"]
    return next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)


def _pins(lines: list[str]) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    return {canonicalize_name(n): v for n, v in (ln.split("==", 1) for ln in lines if "==" in ln)}


def test_tokensafe_env_matches_the_lock():
    env = REPO / "envs" / "tokensafe.yaml"
    lock = [
        ln.strip()
        for ln in (REPO / "requirements.lock").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    pins = _pins(_pip_lines(env))
    assert pins == {**_pins(lock), "torch": "2.13.0"}
    assert "python=3.11" in load(env)["dependencies"]
    assert "-e .." in _pip_lines(env) and (env.parent / ".." / "pyproject.toml").is_file()


def test_vllm_env_pins_vllm_and_installs_the_package():
    env = REPO / "envs" / "vllm.yaml"
    lines = _pip_lines(env)
    pins = _pins(lines)
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["vllm"])
    assert {"torch", "transformers", "peft", "pandas", "pyarrow"} <= set(pins)
    assert "python=3.11" in load(env)["dependencies"]
    # pip runs from the env file's folder (conda), so '..' is the repository root.
    assert "-e .." in lines and (env.parent / ".." / "pyproject.toml").is_file()
    # The rules reference the same file.
    assert 'VLLM_ENV = "../../envs/vllm.yaml"' in (REPO / "workflow" / "rules" / "common.smk").read_text()


def test_vllm_env_can_install_the_package():
    """'-e ..' resolves with the package's own requirements: each must admit the vLLM env's pin of that package."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
        pytest.skip("tomllib needs Python 3.11")
    pins = _pins(_pip_lines(REPO / "envs" / "vllm.yaml"))
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    clashes = []
    for dep in map(Requirement, deps):
        pin = pins.get(canonicalize_name(dep.name))
        if pin is not None and not dep.specifier.contains(pin, prereleases=True):
            clashes.append(f"{dep} vs {dep.name}=={pin}")
    assert not clashes, f"pyproject.toml requirements exclude envs/vllm.yaml's pins: {clashes}"


def test_presets_plan_the_papers_llm_judge_metrics(planned):
    """TOSS: the win rate vs SFT (GPT-4o, AlpacaEval's prompt) of every run and the HEx-PHI score; PACT: none (its
    paper reports the Llama-Guard-3 ASR). Planning reads no API key."""
    cfg, counts, _ = planned
    llm = cfg["judge"].get("llm", {})
    if cfg["methods"] and "toss" in cfg["methods"] and llm.get("enabled"):
        n_ratios, n_seeds = len(cfg["poison_ratios"]), len(cfg["seeds"])
        assert llm["server"] == "external" and llm["model"].startswith("gpt-4o")
        assert llm["pairwise_template"] == "alpaca_eval_gpt4" and llm["rubrics"] == ["hexphi"]
        sft_runs = n_ratios * n_seeds
        assert counts["llm_win_rate"] == counts["finetune"] - sft_runs + n_ratios * n_seeds  # + initial per ratio
        assert counts["llm_rubrics"] == counts["generate"]
        assert "world_judge" not in counts
    else:
        assert not llm.get("enabled")
        assert not {"llm_win_rate", "llm_rubrics", "world_judge"} & set(counts)
