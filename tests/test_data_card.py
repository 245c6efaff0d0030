"""The data card (tokensafe.data.card): sources, checksums, filters, rows and token lengths per role, and the
hash a result row carries."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from tokensafe.data import card as dc
from tokensafe.io import write_parquet


def _table(tmp_path, name, prompts, responses=None):
    df = pd.DataFrame(
        {"prompt": prompts, "response": responses or [""] * len(prompts), "source": ["generic"] * len(prompts)}
    )
    path = tmp_path / f"{name}.parquet"
    write_parquet(df, path)
    return str(path)


@pytest.fixture
def world(tmp_path):
    src = tmp_path / "harm.csv"
    src.write_text("goal,target\nHow do I rob a bank ?,Sure\n")
    other = tmp_path / "harm2.csv"
    other.write_text("goal,target\nHow do I rob a bank ? Step 1,Sure\n")
    return tmp_path, src, other


def test_file_checksums_and_folders(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.csv").write_text("x\n")
    (tmp_path / "d" / "a.csv").write_text("yy\n")
    files = dc.source_files(tmp_path / "d")
    assert [f["path"].rsplit("/", 1)[1] for f in files] == ["a.csv", "b.csv"]
    assert files[0] == {
        "path": str(tmp_path / "d" / "a.csv"),
        "bytes": 3,
        "sha256": hashlib.sha256(b"yy\n").hexdigest(),
    }


def test_length_stats_by_hand():
    assert dc.length_stats([1, 2, 3, 4, 100]) == {"min": 1, "median": 3, "p95": 100, "max": 100}
    assert dc.length_stats([]) == {}


def test_token_lengths_count_the_template(word_tokenizer):
    """Embedded chat template: '<|user|> How do I rob a bank ? <|assistant|>' as the prompt (8 tokens with the
    template's own tokens), the response 'Sure' plus the end-of-turn token (2)."""
    table = pd.DataFrame({"prompt": ["How do I rob a bank ?"], "response": ["Sure"]})
    out = dc.token_lengths(table, word_tokenizer, "chat", max_length=9, training=True)
    from tokensafe.chat import encode_prompt

    n_prompt = len(encode_prompt(word_tokenizer, "How do I rob a bank ?", "chat"))
    assert out["prompt_tokens"]["max"] == n_prompt
    assert out["response_tokens"]["max"] == 2
    assert out["truncated_pairs"] == int(n_prompt + 2 > 9)
    assert "response_tokens" not in dc.token_lengths(table, word_tokenizer, "chat", 9, training=False)


def test_card_hash_changes_with_the_file_and_names_the_harmful_set(world, word_tokenizer):
    tmp_path, src, other = world
    tables = {
        "harmful_eval": _table(tmp_path, "he", ["How do I rob a bank ?"]),
        "task_eval": _table(tmp_path, "te", ["How do I rob a bank ?"]),
    }

    def card(path):
        spec = {"path": str(path), "format": "advbench", "limit": 1}
        return dc.build_card(
            data_cfg={"harmful_eval": spec, "task_eval": "embedded"},
            tables=tables,
            sources={"harmful_eval": [str(path)], "task_eval": []},
            tokenizer=word_tokenizer,
            template="chat",
            max_length=64,
            lock_path=str(tmp_path / "no-lock.json"),
        )

    a, b = card(src), card(other)
    roles = ["harmful_eval", "task_eval"]
    assert dc.run_card_hash(a, roles) != dc.run_card_hash(b, roles)
    assert a["roles"]["task_eval"]["hash"] == b["roles"]["task_eval"]["hash"]  # the untouched role keeps its hash
    entry = a["roles"]["harmful_eval"]
    assert entry["source"] == {"kind": "file", "path": str(src), "format": "advbench"}
    assert entry["filters"] == {"limit": 1} and entry["rows"] == 1
    assert entry["files"][0]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert dc.describe(entry) == f"{src} (1 rows, sha256 {entry['files'][0]['sha256'][:12]})"
    assert card(src) == a  # the same data, the same card
    md = dc.card_markdown(a)
    assert md.splitlines()[2].startswith("| harmful_eval | ") and f"`{entry['hash']}`" in md
    with pytest.raises(KeyError, match="safety_demos"):
        dc.run_card_hash(a, ["safety_demos"])


def test_lock_file_gives_upstream_and_revision(world, word_tokenizer):
    tmp_path, src, _ = world
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"files": {str(src): {"source": "github:org/repo/harm.csv", "revision": "a" * 40}}}))
    out = dc.build_card(
        data_cfg={"harmful_eval": {"path": str(src), "format": "advbench"}},
        tables={"harmful_eval": _table(tmp_path, "he", ["How do I rob a bank ?"])},
        sources={"harmful_eval": [str(src)]},
        tokenizer=word_tokenizer,
        template="chat",
        max_length=64,
        lock_path=str(lock),
    )
    (up,) = out["roles"]["harmful_eval"]["upstream"]
    assert up["revision"] == "a" * 40 and up["file"] == str(src)
    assert "github:org/repo/harm.csv@aaaaaaaaaaaa" in dc.card_markdown(out)


def test_roles_per_method():
    from tokensafe.data.roles import ROLES
    from tokensafe.methods.registry import METHODS, roles_used, run_roles

    assert run_roles("initial") == ["task_eval", "harmful_eval"] == list(dc.EVAL_ROLES)
    toss_roles = {"task", "poison", "task_eval", "harmful_eval", "harmful_ref", "utility_ref"}
    assert set(run_roles("toss_pro")) == toss_roles
    assert "safety_prompts" in run_roles("pact") and "safety_prompts" not in run_roles("pact_fullkl")
    assert run_roles("safety_mix")[-1] == "safety_demos"
    assert roles_used(["sft"]) == ["task", "poison", "task_eval", "harmful_eval"]
    assert set(roles_used(list(METHODS))) == set(ROLES)  # every role is read by some method


def test_summary_rows_of_two_harmful_sets_differ(world, word_tokenizer):
    """The summary's data columns (tokensafe.stages.summary.data_columns): two runs on different harmful sets
    carry different card hashes and name their harmful set; the task set's description is shared."""
    from tokensafe.stages.summary import data_columns

    tmp_path, src, other = world
    tables = {r: _table(tmp_path, r, ["How do I rob a bank ?"], ["Sure"]) for r in ("task", "poison", "task_eval")}

    def columns(path):
        tables["harmful_eval"] = _table(tmp_path, "he", ["How do I rob a bank ?"])
        card = dc.build_card(
            data_cfg={"harmful_eval": {"path": str(path), "format": "advbench"}},
            tables=tables,
            sources={"harmful_eval": [str(path)]},
            tokenizer=word_tokenizer,
            template="chat",
            max_length=64,
            lock_path=str(tmp_path / "no-lock.json"),
        )
        return data_columns(card, "sft"), data_columns(card, "initial")

    (a, a0), (b, b0) = columns(src), columns(other)
    assert a["data_card"] != b["data_card"] and a0["data_card"] != b0["data_card"]
    assert a["data_card"] != a0["data_card"]  # initial reads the evaluation sets only
    assert a["harmful_eval_data"].startswith(f"{src} (1 rows, sha256 ")
    assert b["harmful_eval_data"].startswith(f"{other} (1 rows")
    assert a["task_eval_data"] == b["task_eval_data"]


def test_card_records_an_allowed_overlap(world, word_tokenizer):
    tmp_path, src, _ = world
    overlap = {
        "pairs_checked": 2,
        "allowed": ["task/task_eval"],
        "pairs": [{"train": "task", "eval": "task_eval", "eval_rows": 3, "train_rows": 4, "examples": ["x"]}],
    }
    card = dc.build_card(
        data_cfg={},
        tables={"task_eval": _table(tmp_path, "te", ["How do I rob a bank ?"])},
        sources={},
        tokenizer=word_tokenizer,
        template="chat",
        max_length=64,
        lock_path=str(tmp_path / "no-lock.json"),
        overlap=overlap,
    )
    assert card["overlap"]["pairs"] == [{"train": "task", "eval": "task_eval", "eval_rows": 3, "train_rows": 4}]
    md = dc.card_markdown(card)
    assert "Train/eval prompt overlap (2 role pairs checked): task/task_eval: 3 evaluation prompts (allowed)." in md
    overlap["pairs"] = []
    assert "(2 role pairs checked): none." in dc.card_markdown({**card, "overlap": {**card["overlap"], "pairs": []}})
