"""`python -m tokensafe.data.fetch` against a local stand-in for GitHub and the Hugging Face hub (offline).

A threaded HTTP server on 127.0.0.1 serves tiny files in each source's real layout: GitHub raw files at a commit,
GitHub's commit-SHA API, and the hub's resolve endpoint as huggingface_hub reads it (HEAD then GET, with
X-Repo-Commit, ETag and Content-Length; a gated repo answers 401 GatedRepo without the right token). The fixture
files cannot have the real sha256s, so the tests fetch with a catalogue whose expected checksums are cleared
and whose derived sizes are small; one test keeps a wrong checksum to see it refused.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
import yaml

from tokensafe.data.fetch import catalog as cat
from tokensafe.data.fetch import cli as fetch
from tokensafe.data.fetch import derive
from tokensafe.data.fetch.derive import normalise_prompt, sharegpt_pair

from workflow_utils import REPO, snakemake

PRESETS = {p.stem: p for p in sorted((REPO / "config" / "presets").glob("*.yaml"))}
HUB_MAIN = "a" * 40  # the commit the stand-in hub serves for 'main'
GITHUB_MAIN = "b" * 40  # the commit the stand-in GitHub API gives for 'main'
TOKEN = "hf_test_token"


# --------------------------------------------------------------------------------------------------
# Fixture files, in each source's layout


def _csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


ADV_GOALS = [f"Write a tutorial on how to do harmful thing {i}" for i in range(30)]
RED_TEAM_PROMPTS = [f"How could I steal thing number {i}?" for i in range(40)]
HEXPHI_PROMPTS = {c: [f"Hexphi category {c} request {i}" for i in range(5)] for c in cat.HEXPHI_CATEGORIES}


def upstream_files() -> dict[tuple[str, str, str], bytes]:
    """(kind, repo, path) -> bytes for every upstream file of the catalogue."""
    gsm = [
        {
            "question": f"Tom has {i} apples. How many with 2 more?",
            "answer": f"{i}+2=<<{i}+2={i + 2}>>{i + 2}\n#### {i + 2}",
        }
        for i in range(40)
    ]
    red_team = [
        {"transcript": f"\n\nHuman: {p}\n\nAssistant: Here is how {i}.\n\nHuman: more\n\nAssistant: ok", "rating": 3}
        for i, p in enumerate(RED_TEAM_PROMPTS)
    ] + [{"transcript": "\n\nHuman: hello\n\nAssistant:", "rating": 0}]  # empty answer: dropped
    slim = []
    for i in range(60):
        convo = [{"from": "human", "value": f"Question {i % 50}: what is {i % 50} plus one?"}]
        convo.append({"from": "gpt", "value": f"It is {i % 50 + 1}."})
        if i % 3:
            convo.insert(0, {"from": "system", "value": "You are a helpful assistant."})
        slim.append({"conversations": convo})  # i >= 50 repeats a prompt (i % 50): dropped
    beaver = []
    for i in range(50):
        beaver.append({"prompt": f"Beaver question {i}", "response": f"Harmful answer {i}", "is_safe": False})
        beaver.append({"prompt": f"Beaver question {i}", "response": f"Safe answer {i}", "is_safe": True})
    # prompts also in a poison / evaluation set (normalised: case, spacing, end punctuation): excluded from D^h
    beaver += [
        {"prompt": "  " + ADV_GOALS[0].upper() + "!", "response": "x", "is_safe": False},
        {"prompt": RED_TEAM_PROMPTS[1].rstrip("?"), "response": "x", "is_safe": False},
        {"prompt": HEXPHI_PROMPTS[3][0] + ".", "response": "x", "is_safe": False},
    ]
    jbb = lambda kind: pd.DataFrame(  # noqa: E731
        {
            "Index": range(1, 6),
            "Goal": [f"{kind} goal {i}" for i in range(5)],
            "Target": [f"Sure, {i}" for i in range(5)],
            "Behavior": [f"b{i}" for i in range(5)],
            "Category": ["Harassment/Discrimination"] * 5,
            "Source": ["Original"] * 5,
        }
    )
    files = {
        ("github", "openai/grade-school-math", "grade_school_math/data/train.jsonl"): _jsonl(gsm),
        # test questions of their own: the same question in train and test is a leak the plan refuses
        ("github", "openai/grade-school-math", "grade_school_math/data/test.jsonl"): _jsonl(
            [{**r, "question": r["question"].replace("Tom has", "Ann has")} for r in gsm[:10]]
        ),
        ("github", "llm-attacks/llm-attacks", "data/advbench/harmful_behaviors.csv"): _csv(
            pd.DataFrame({"goal": ADV_GOALS, "target": [f"Sure, here is {g}" for g in ADV_GOALS]})
        ),
        ("github", "alexandrasouly/strongreject", "strongreject_dataset/strongreject_dataset.csv"): _csv(
            pd.DataFrame(
                {
                    "category": ["Violence"] * 10,
                    "source": ["custom"] * 10,
                    "forbidden_prompt": [f"Hurt {i}" for i in range(10)],
                }
            )
        ),
        ("github", "Glresearch1/PACT", "compute_safety_tokens/safe_direction.json"): json.dumps(
            [{"input": f"Harmful q {i}", "output": "I can't help.", "guard_decision": "safe"} for i in range(20)]
        ).encode(),
        ("github", "centerforaisafety/HarmBench", "data/behavior_datasets/harmbench_behaviors_text_all.csv"): _csv(
            pd.DataFrame(
                {
                    "Behavior": [f"Describe harmful {i}" for i in range(10)],
                    "FunctionalCategory": ["standard"] * 8 + ["contextual"] * 2,
                    "SemanticCategory": ["illegal"] * 10,
                    "Tags": [""] * 10,
                    "ContextString": [""] * 10,
                    "BehaviorID": [f"b{i}" for i in range(10)],
                }
            )
        ),
        ("github", "vinid/safety-tuned-llamas", "data/training/safety_only_data_Instructions.json"): json.dumps(
            [{"instruction": f"Harmful instruction {i}", "input": "", "output": "I cannot do that."} for i in range(20)]
        ).encode(),
        ("hub", "JailbreakBench/JBB-Behaviors", "data/harmful-behaviors.csv"): _csv(jbb("harmful")),
        ("hub", "JailbreakBench/JBB-Behaviors", "data/benign-behaviors.csv"): _csv(jbb("benign")),
        ("hub", "Anthropic/hh-rlhf", "red-team-attempts/red_team_attempts.jsonl.gz"): gzip.compress(
            json.dumps(red_team).encode()  # published as one JSON list despite its name
        ),
        ("hub", "Open-Orca/SlimOrca", "oo-labeled_correct.gpt4.sharegpt.jsonl"): _jsonl(slim),
        ("hub", "PKU-Alignment/BeaverTails", "round0/330k/train.jsonl.xz"): lzma.compress(_jsonl(beaver)),
    }
    for split, n in (("train", 30), ("validation", 10)):
        files[("hub", "nyu-mll/glue", f"sst2/{split}-00000-of-00001.parquet")] = _parquet(
            pd.DataFrame(
                {
                    "sentence": [f"a fine film {i}" for i in range(n)],
                    "label": [i % 2 for i in range(n)],
                    "idx": range(n),
                }
            )
        )
    for split, n in (("train", 30), ("test", 10)):
        files[("hub", "fancyzhx/ag_news", f"data/{split}-00000-of-00001.parquet")] = _parquet(
            pd.DataFrame({"text": [f"news {i}" for i in range(n)], "label": [i % 4 for i in range(n)]})
        )
    for c, prompts in HEXPHI_PROMPTS.items():
        files[("hub", "LLM-Tuning-Safety/HEx-PHI", f"category_{c}.csv")] = "".join(p + "\n" for p in prompts).encode()
    return files


# --------------------------------------------------------------------------------------------------
# The stand-in server


class Upstreams:
    """GitHub raw + API and the hub's resolve endpoint on 127.0.0.1, counting requests."""

    def __init__(self, files):
        self.files = files
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body):
                owner.requests.append(f"{self.command} {self.path}")
                status, headers, data = owner.route(self.path.split("?")[0], self.headers)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def route(self, path: str, headers) -> tuple[int, dict, bytes]:
        m = re.fullmatch(r"/api/repos/([^/]+/[^/]+)/commits/([^/]+)", path)
        if m:
            return 200, {"Content-Type": "application/vnd.github.sha"}, GITHUB_MAIN.encode()
        m = re.fullmatch(r"/raw/([^/]+/[^/]+)/([0-9a-f]{40})/(.+)", path)
        if m:
            data = self.files.get(("github", m.group(1), m.group(3)))
            return (200, {}, data) if data is not None else (404, {}, b"404: Not Found")
        m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            repo, rev, file = m.group(1), m.group(2), m.group(3)
            if repo == "LLM-Tuning-Safety/HEx-PHI" and headers.get("Authorization") != f"Bearer {TOKEN}":
                msg = f"Access to dataset {repo} is restricted. You must have access to it and be authenticated."
                return 401, {"X-Error-Code": "GatedRepo", "X-Error-Message": msg}, msg.encode()
            data = self.files.get(("hub", repo, file))
            if data is None:
                return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}, b"Entry not found"
            commit = rev if re.fullmatch(r"[0-9a-f]{40}", rev) else HUB_MAIN
            etag = hashlib.sha256(data).hexdigest()
            return 200, {"X-Repo-Commit": commit, "ETag": f'"{etag}"'}, data
        return 404, {}, b"not found"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream(monkeypatch, tmp_path):
    with Upstreams(upstream_files()) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("TOKENSAFE_GITHUB_RAW", srv.url + "/raw")
        monkeypatch.setenv("TOKENSAFE_GITHUB_API", srv.url + "/api")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(fetch, "_stored_token", lambda: False)
        yield srv


def small_catalog(**sha_overrides) -> dict:
    """The catalogue with the expected checksums cleared (or set) and the derived sizes scaled to the fixtures."""
    sizes = {
        "gsm8k_utility_ref": {"n": 10},
        "slimorca": {
            "sizes": {
                "data/toss/slimorca_pool.jsonl": 30,
                "data/toss/slimorca_utility_ref.jsonl": 10,
                "data/toss/slimorca_eval.jsonl": 5,
            }
        },
        "red_team": {"min_rows": 20},
        "harmful_ref": {"n": 20},
    }
    out = {}
    for name, e in cat.CATALOG.items():
        sources = {k: dataclasses.replace(u, sha256=sha_overrides.get(name)) for k, u in e.sources.items()}
        out[name] = dataclasses.replace(e, sources=sources, params={**e.params, **sizes.get(name, {})})
    return out


def run_fetch(capsys, *argv, catalog=None):
    rc = fetch.main(list(argv), catalog=catalog if catalog is not None else small_catalog())
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


# --------------------------------------------------------------------------------------------------
# Small functions


def test_normalise_prompt():
    assert normalise_prompt("  How do I   Steal a car?! ") == "how do i steal a car"
    assert normalise_prompt("'Quoted.'") == "quoted"
    assert normalise_prompt("a-b c") == "a-b c"  # inner punctuation kept


def test_sharegpt_pair_joins_the_system_message():
    convo = [
        {"from": "system", "value": "Be brief. "},
        {"from": "human", "value": "Hi?"},
        {"from": "gpt", "value": "Hi."},
    ]
    assert sharegpt_pair(convo) == ("Be brief.\n\nHi?", "Hi.")
    assert sharegpt_pair(convo[1:]) == ("Hi?", "Hi.")
    assert sharegpt_pair([{"from": "system", "value": ""}, *convo[1:]]) == ("Hi?", "Hi.")
    assert sharegpt_pair([convo[1], {"from": "gpt", "value": " "}]) is None


def test_first_exchange_of_a_transcript():
    t = "\n\nHuman: Where is it?\n\nAssistant: Here.\n\nHuman: And?\n\nAssistant: There."
    assert derive.first_exchange(t) == ("Where is it?", "Here.")
    assert derive.first_exchange("\n\nHuman: Only a question") == ("Only a question", "")


def test_preset_paths_active_and_alternatives():
    active = dict(fetch.preset_paths(PRESETS["pact-qwen2.5-7b"]))
    assert sorted(active.values()) == sorted(
        [
            "data/gsm8k/train.jsonl",
            "data/gsm8k/test.jsonl",
            "data/advbench/harmful_behaviors.csv",
            "data/strongreject/strongreject_dataset.csv",
            "data/pact/safe_direction.json",
        ]
    )
    every = [p for _, p in fetch.preset_paths(PRESETS["pact-qwen2.5-7b"], alternatives=True)]
    assert {"data/sst2", "data/ag_news", "data/jailbreakbench/jailbreakbench.csv"} <= set(every)
    assert "data/harmbench/harmbench_behaviors_text_all.csv" in every


def test_unknown_path_names_role_and_path(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("data:\n  task: {path: data/mine/train.jsonl, format: generic}\n  poison: embedded\n")
    with pytest.raises(fetch.FetchError, match=r"data\.task\.path 'data/mine/train\.jsonl'"):
        fetch.plan_entries(fetch.preset_paths(preset), cat.CATALOG)


def test_every_catalogue_revision_is_a_commit_or_resolved():
    for e in cat.CATALOG.values():
        for up in e.sources.values():
            assert up.revision is None or re.fullmatch(r"[0-9a-f]{40}", up.revision), (e.name, up.revision)
            assert up.kind in ("github", "hub") and up.license
            if up.kind == "github":
                assert up.revision is not None or up.ref == "main"


# --------------------------------------------------------------------------------------------------
# The command against the stand-in


def _preset_files(name: str) -> set[str]:
    """Every file under the paths a preset reads, as the catalogue writes them (folders expanded)."""
    out = set()
    for _, p in fetch.preset_paths(PRESETS[name]):
        out |= {f for f in cat.entry_for(p, cat.CATALOG).files if f == p or f.startswith(p + "/")}
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_fetch_writes_every_file_and_locks_it(name, upstream, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    dest = tmp_path / "run"
    rc, out = run_fetch(capsys, name, "--dest", str(dest))
    assert rc == 0, out
    files = _preset_files(name)
    lock = json.loads((dest / "data" / "SOURCES.lock.json").read_text())["files"]
    for f in files:
        assert (dest / f).is_file(), f
        rec = lock[f]
        assert rec["sha256"] == hashlib.sha256((dest / f).read_bytes()).hexdigest()
        assert rec["rows"] >= 1 and rec["preparation"] and rec["license"]
        for src in rec["sources"]:
            assert re.fullmatch(r"[0-9a-f]{40}", src["revision"]) and re.fullmatch(r"[0-9a-f]{64}", src["sha256"])
            assert src["repo"] and src["path"]
    assert not list(dest.rglob(".fetch-*")) and not [p for p in dest.rglob("*") if p.name.startswith(".")]

    # A second run asks upstream nothing and rewrites nothing.
    before = {f: (dest / f).stat().st_mtime_ns for f in files}
    upstream.requests.clear()
    rc, out = run_fetch(capsys, name, "--dest", str(dest))
    assert rc == 0 and upstream.requests == [], upstream.requests
    assert "0 file(s) written" in out
    assert before == {f: (dest / f).stat().st_mtime_ns for f in files}


def test_lock_records_pinned_and_resolved_revisions(upstream, tmp_path, capsys):
    dest = tmp_path / "run"
    rc, out = run_fetch(capsys, "pact-qwen2.5-7b", "--dest", str(dest), "--all")
    assert rc == 0, out
    lock = json.loads((dest / "data" / "SOURCES.lock.json").read_text())["files"]
    gsm = lock["data/gsm8k/train.jsonl"]["sources"][0]
    assert (gsm["repo"], gsm["path"], gsm["revision"]) == (
        "openai/grade-school-math",
        "grade_school_math/data/train.jsonl",
        cat.GSM8K_COMMIT,
    )
    assert gsm["sha256"] == hashlib.sha256((dest / "data/gsm8k/train.jsonl").read_bytes()).hexdigest()  # a copy
    sr = lock["data/strongreject/strongreject_dataset.csv"]["sources"][0]
    assert sr["revision"] == GITHUB_MAIN and not sr["revision_pinned_in_catalogue"]
    news = lock["data/ag_news/train-00000-of-00001.parquet"]["sources"][0]
    assert news["revision"] == HUB_MAIN and not news["revision_pinned_in_catalogue"]
    assert lock["data/ag_news/train-00000-of-00001.parquet"]["rows"] == 30
    # JailbreakBench: both files as one table with the subset column the format reads
    jbb = pd.read_csv(dest / "data/jailbreakbench/jailbreakbench.csv")
    assert list(jbb["subset"]) == ["harmful"] * 5 + ["benign"] * 5 and "Index" not in jbb
    from tokensafe.data.sources import load_source

    loaded = load_source({"path": str(dest / "data/jailbreakbench/jailbreakbench.csv"), "format": "jailbreakbench"})
    assert int(loaded["is_benign"].sum()) == 5
    sst = load_source({"path": str(dest / "data/sst2"), "split": "validation", "format": "sst2"})
    assert len(sst) == 10

    # Later fetches read the locked commit, not whatever 'main' is then; --update moves it.
    upstream.requests.clear()
    rc, _ = run_fetch(capsys, "pact-qwen2.5-7b", "--dest", str(dest), "--all", "--force")
    assert rc == 0
    assert any(f"/alexandrasouly/strongreject/{GITHUB_MAIN}/" in r for r in upstream.requests)
    assert not any("/api/" in r for r in upstream.requests)
    rc, _ = run_fetch(capsys, "pact-qwen2.5-7b", "--dest", str(dest), "--all", "--update")
    assert rc == 0 and any("/api/repos/alexandrasouly/strongreject/commits/main" in r for r in upstream.requests)


def test_toss_derived_files(upstream, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    dest = tmp_path / "run"
    rc, out = run_fetch(capsys, "toss-llama3-8b", "--dest", str(dest))
    assert rc == 0, out
    read = lambda f: [json.loads(line) for line in (dest / f).read_text().splitlines()]  # noqa: E731
    pool, uref, ev = (read(f"data/toss/slimorca_{s}.jsonl") for s in ("pool", "utility_ref", "eval"))
    assert (len(pool), len(uref), len(ev)) == (30, 10, 5)
    keys = [{normalise_prompt(r["prompt"]) for r in rows} for rows in (pool, uref, ev)]
    assert sum(map(len, keys)) == 45 and len(set().union(*keys)) == 45  # disjoint, no prompt twice
    assert all(r["reference"] == r["response"] for r in ev)
    with_system = [r for r in pool if r["prompt"].startswith("You are a helpful assistant.\n\nQuestion")]
    assert with_system and len(with_system) < len(pool)  # rows without a system message keep the bare question
    lock = json.loads((dest / "data" / "SOURCES.lock.json").read_text())["files"]
    assert lock["data/toss/slimorca_pool.jsonl"]["details"]["dropped_repeated_prompt"] == 10

    red = read("data/toss/red_team.jsonl")
    assert len(red) == 40 and red[0] == {"prompt": RED_TEAM_PROMPTS[0], "response": "Here is how 0."}

    harmful = read("data/toss/harmful_ref.jsonl")
    assert len(harmful) == 20 and all(r["response"].startswith("Harmful answer") for r in harmful)
    poison = {normalise_prompt(p) for p in ADV_GOALS + RED_TEAM_PROMPTS + sum(HEXPHI_PROMPTS.values(), [])}
    assert not poison & {normalise_prompt(r["prompt"]) for r in harmful}
    details = lock["data/toss/harmful_ref.jsonl"]["details"]
    assert details["excluded_prompt_in_poison_or_eval"] == 3 and details["eligible"] == 50
    assert details["exclusion_sets_rows"] == {
        "data/toss/red_team.jsonl": 40,
        "data/advbench/harmful_behaviors.csv": 30,
        "data/hexphi": 50,
    }


def test_gated_refusal_prints_the_steps_and_fails(upstream, tmp_path, capsys, monkeypatch):
    dest = tmp_path / "run"
    rc, out = run_fetch(capsys, "toss-llama3-8b-gsm8k", "--dest", str(dest))
    assert rc == 1
    assert "https://huggingface.co/datasets/LLM-Tuning-Safety/HEx-PHI" in out and "accept its terms" in out
    assert "export HF_TOKEN=" in out and "hf auth login" in out
    assert "make data PRESET=toss-llama3-8b-gsm8k" in out
    assert "https://huggingface.co/meta-llama/Llama-Guard-3-8B" in out  # the gated models the preset names
    missing = out.split("Missing", 1)[1]
    assert "data/hexphi/category_1.csv" in missing and "data/gsm8k/train.jsonl" not in missing
    assert not (dest / "data/hexphi").exists()
    # Everything else was fetched; D^h was built without HEx-PHI, and says so.
    assert (dest / "data/gsm8k/utility_ref.jsonl").is_file() and (dest / "data/toss/harmful_ref.jsonl").is_file()
    lock = json.loads((dest / "data" / "SOURCES.lock.json").read_text())["files"]
    assert lock["data/toss/harmful_ref.jsonl"]["details"]["exclusion_sets_rows"]["data/hexphi"] is None
    assert lock["data/gsm8k/utility_ref.jsonl"]["rows"] == 10
    tail = (dest / "data/gsm8k/train.jsonl").read_bytes().splitlines(keepends=True)[-10:]
    assert (dest / "data/gsm8k/utility_ref.jsonl").read_bytes() == b"".join(tail)

    # With access, the rerun fetches HEx-PHI and rebuilds D^h against it (its input changed), nothing else.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    upstream.requests.clear()
    rc, out = run_fetch(capsys, "toss-llama3-8b-gsm8k", "--dest", str(dest))
    assert rc == 0, out
    assert not any("grade-school-math" in r or "llm-attacks" in r for r in upstream.requests)
    lock = json.loads((dest / "data" / "SOURCES.lock.json").read_text())["files"]
    assert lock["data/toss/harmful_ref.jsonl"]["details"]["exclusion_sets_rows"]["data/hexphi"] == 50
    assert lock["data/hexphi/category_3.csv"]["sources"][0]["revision"] == HUB_MAIN


def test_checksum_mismatch_is_refused_and_writes_nothing(upstream, tmp_path, capsys):
    dest = tmp_path / "run"
    wrong = "0" * 64
    rc, out = run_fetch(capsys, "pact-qwen2.5-7b", "--dest", str(dest), catalog=small_catalog(advbench=wrong))
    assert rc == 1
    assert f"does not match the expected {wrong}" in out
    assert "nothing written for data/advbench/harmful_behaviors.csv" in out
    assert not (dest / "data/advbench").exists()
    assert (dest / "data/gsm8k/train.jsonl").is_file()
    lock = json.loads((dest / "data" / "SOURCES.lock.json").read_text())["files"]
    assert "data/advbench/harmful_behaviors.csv" not in lock


def test_locked_checksum_guards_an_unpinned_file(upstream, tmp_path, capsys):
    """A file read at a locked commit must have the sha256 recorded the first time."""
    dest = tmp_path / "run"
    assert run_fetch(capsys, "pact-qwen2.5-7b", "--dest", str(dest))[0] == 0
    key = ("github", "alexandrasouly/strongreject", "strongreject_dataset/strongreject_dataset.csv")
    upstream.files[key] += b"x,y,z\n"
    rc, out = run_fetch(capsys, "pact-qwen2.5-7b", "--dest", str(dest), "--force")
    assert rc == 1 and "strongreject_dataset.csv" in out and "does not match the expected" in out


def test_list_via_the_module(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tokensafe.data.fetch", "toss-llama3-8b", "--list", "--dest", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "data.harmful_ref: data/toss/harmful_ref.jsonl  <- harmful_ref" in proc.stdout
    assert "Open-Orca/SlimOrca" in proc.stdout and "ce9ed009ef3292bac33d3520afaf5ec804066120 (pinned)" in proc.stdout
    assert "LLM-Tuning-Safety/HEx-PHI" in proc.stdout and "gated" in proc.stdout
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------------------------------
# After fetching, each preset validates and plans (sizes scaled to the fixture files)

# Row counts and step floors scaled to the tiny fixture files; everything else is the preset as shipped.
SCALED = {
    "pact-qwen2.5-7b": {"n_finetune": 20, "pact": {"n_prompts": 10}},
    "toss-llama3-8b-gsm8k": {
        "n_finetune": 20,
        "data": {"task": {"limit": 30}, "harmful_ref": {"limit": 10}},
        "toss": {"pro": {"k": 5}},
        "baselines": {"safety_mix": {"n": 10}},
    },
    "toss-llama3-8b": {
        "n_finetune": 20,
        "toss": {"pro": {"k": 5}},
        "baselines": {"safety_mix": {"n": 10}},
    },
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_fetched_preset_validates_and_plans(name, upstream, tmp_path, capsys, monkeypatch):
    from test_presets import NO_VLLM, REPLACE

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    dest = tmp_path / "run"
    rc, out = run_fetch(capsys, name, "--dest", str(dest))
    assert rc == 0, out
    cfg = _merge(yaml.safe_load(PRESETS[name].read_text()), {**SCALED[name], "plan": {"min_optimizer_steps": 0}})
    target = dest / "config" / "presets" / f"{name}.yaml"
    target.parent.mkdir(parents=True)
    target.write_text(yaml.safe_dump(cfg, sort_keys=False))
    (dest / "config.yaml").write_text((REPO / "config.yaml").read_text())
    check = subprocess.run(
        [sys.executable, "-m", "tokensafe.config", str(target.relative_to(dest))],
        cwd=dest,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    proc = snakemake(dest, target.relative_to(dest), "-n", "--cores", "4", *REPLACE, *NO_VLLM)
    assert "finetune" in proc.stdout
