"""Train/eval prompt overlap and prompt lengths, checked at planning (tokensafe.data.checks) and recorded by the
data_overlap job: hand-made tables, a word-level tokenizer (one token per word), no network."""

import copy
import json

import pandas as pd
import pytest

from tokensafe.config import ConfigError, check_config
from tokensafe.data.checks import planning_problems
from tokensafe.data.leakage import normalise, overlap_report
from tokensafe.data.lengths import encode_for_generation, fit_prompt_ids, prompt_token_counts
from tokensafe.stages.data_checks import write_overlap

from workflow_utils import REPO, load_default_config, micro_config, snakemake, write_config


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def gen_rows(questions):
    return [{"question": q, "answer": f"x\n#### {i}"} for i, q in enumerate(questions)]


@pytest.fixture
def files(tmp_path):
    """A task pool and a task test set sharing two questions (rows 2 and 4 of the test file, 1-based), one of
    them only after normalisation."""
    task = write_jsonl(tmp_path / "train.jsonl", gen_rows(["How do I go ?", "a b c", "I rob a bank .", "d e"]))
    test = write_jsonl(tmp_path / "test.jsonl", gen_rows(["f g", "  how do  I go?! ", "h i", "I rob a bank ."]))
    return task, test


def config_with(task, test, **data):
    cfg = load_default_config()
    cfg["methods"] = ["sft"]
    cfg["method_poison_ratios"], cfg["method_seeds"] = {}, {}
    cfg["data"]["task"] = {"path": task, "format": "gsm8k"}
    cfg["data"]["task_eval"] = {"path": test, "format": "gsm8k"}
    cfg["data"].update(data)
    cfg["models"]["embedded_on_real_data"] = True  # the embedded models on real files: these tests check the data
    return cfg


def test_normalise_folds_case_width_space_and_end_punctuation():
    assert normalise("  How do  I\tgo?! ") == normalise("how do I go") == "how do i go"
    assert normalise("ＡＢＣ 1+1") == "abc 1+1"  # NFKC: full-width letters are ASCII letters
    assert normalise("a. b") != normalise("a b")  # punctuation inside the prompt is kept


def test_planted_overlap_stops_planning_with_counts_and_rows(files):
    task, test = files
    with pytest.raises(ConfigError) as err:
        check_config(config_with(task, test))
    msg = str(err.value)
    assert "data.task_eval: 2 of 4 evaluation prompts (1 character for character) are also training prompts" in msg
    assert "of data.task (2 of its 4 rows)" in msg
    assert f"{test} row 2 = {task} row 1: '  how do  I go?! '" not in msg  # excerpts are whitespace-collapsed
    assert f"{test} row 2 = {task} row 1: 'how do I go?!'" in msg
    assert f"{test} row 4 = {task} row 3: 'I rob a bank .'" in msg
    assert "data.allow_overlap: [task/task_eval]" in msg


def test_allowed_overlap_passes_and_the_job_records_the_counts(files, tmp_path):
    task, test = files
    cfg = config_with(task, test, allow_overlap=["task/task_eval"])
    notices = []
    check_config(cfg, notices=notices)
    assert any("data.allow_overlap: 2 data.task_eval prompts are also in data.task (allowed" in n for n in notices)
    # The data_overlap job: the canonical tables the source_table jobs write, here loaded directly.
    from tokensafe.data.sources import load_source

    tables = {}
    for role in ("task", "task_eval"):
        df = load_source(cfg["data"][role])
        tables[role] = str(tmp_path / f"{role}.parquet")
        df.to_parquet(tables[role])
    out = tmp_path / "overlap.json"
    settings = {"data": {**cfg["data"], "allow_overlap": ["task/task_eval"]}}
    write_overlap(tables=tables, settings=settings, out=str(out))
    [pair] = json.loads(out.read_text())["pairs"]
    assert (pair["train"], pair["eval"], pair["allowed"]) == ("task", "task_eval", True)
    assert (pair["eval_rows"], pair["eval_rows_exact"], pair["train_rows"]) == (2, 1, 2)
    # Not allowed, the job stops like planning does (it is what catches hub and embedded tables).
    with pytest.raises(ValueError, match="2 of 4 evaluation prompts"):
        write_overlap(tables=tables, settings={"data": {**cfg["data"], "allow_overlap": []}}, out=str(out))


def test_the_embedded_world_shares_no_prompt_between_training_and_evaluation():
    from tokensafe.data.roles import ROLES
    from tokensafe.world.corpus import build_world_tables

    world = build_world_tables(0)
    tables = {role: world[spec.world_table] for role, spec in ROLES.items()}
    cfg = {"data": {role: "embedded" for role in ROLES}}
    report = overlap_report(cfg, tables, roles=list(ROLES))
    assert report["pairs_checked"] == 12 and report["pairs"] == []


@pytest.fixture
def word_model(tmp_path, word_tokenizer):
    """A local 'model' folder: the word-level tokenizer and a config.json with 24 positions."""
    folder = tmp_path / "model"
    word_tokenizer.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 24}))
    return str(folder)


def length_config(word_model, tables_dir, **data):
    cfg = load_default_config()
    cfg["methods"] = ["sft"]
    cfg["models"].update(base=word_model, aligned=word_model)
    cfg["prompt_template"] = "chat"  # <|bos|> <|user|> prompt <|assistant|>: prompt words + 3 tokens
    cfg["max_length"] = 8
    cfg["generation"].update(max_new_tokens=10, task_max_new_tokens=6)
    cfg["data"].update(data)
    return cfg


def test_lengths_count_the_prompt_as_the_model_sees_it(word_tokenizer):
    assert prompt_token_counts(word_tokenizer, ["How do I go ?", "a"], "chat") == [8, 4]


def test_too_long_training_and_evaluation_prompts_are_reported_at_planning(word_model, tmp_path):
    # data.task: room for a response needs at most 7 prompt tokens (max_length 8): rows 2 and 3 have 8 and 9.
    task = write_jsonl(tmp_path / "t.jsonl", gen_rows(["a b", "a b c d e", "a b c d e f", "a"]))
    # data.harmful_eval: 24 positions less max_new_tokens 10 leave 14 tokens: row 2 has 3 + 12 = 15.
    harmful = tmp_path / "h.csv"
    pd.DataFrame({"goal": ["c d", " ".join(["b"] * 12), "e"], "target": ["x"] * 3}).to_csv(harmful, index=False)
    cfg = length_config(
        word_model,
        tmp_path,
        task={"path": task, "format": "gsm8k"},
        harmful_eval={"path": str(harmful), "format": "advbench"},
    )
    tables = {}
    from tokensafe.data.sources import check_sources

    assert check_sources(cfg["data"], None, tables) == []
    problems = planning_problems(cfg, tables, notices := [])
    assert notices == []
    [t, h] = problems
    assert t.startswith(f"data.task ({task}): 2 of 4 prompts are longer than 7 tokens (max_length = 8")
    assert "row 2 (8 tokens): 'a b c d e'; row 3 (9 tokens): 'a b c d e f'" in t and "raise max_length" in t
    assert h.startswith(f"data.harmful_eval ({harmful}): 1 of 3 prompts are longer than 14 tokens")
    assert "the model's 24 positions less generation.max_new_tokens = 10" in h and "row 2 (15 tokens)" in h
    assert "data.truncate_long_prompts: true" in h

    # Truncation asked for: the evaluation prompt is counted, the training rows still stop the run.
    cfg["data"]["truncate_long_prompts"] = True
    problems = planning_problems(cfg, tables, notices := [])
    assert [p.split(" (")[0] for p in problems] == ["data.task"]
    assert notices == [
        "data.truncate_long_prompts: 1 of 3 data.harmful_eval prompts are cut to 14 tokens "
        "(recorded in results/data/overlap.json)"
    ]

    # ... and the data_overlap job records it.
    from tokensafe.data.sources import load_source

    paths = {}
    for role in ("task", "harmful_eval"):
        paths[role] = str(tmp_path / f"{role}.parquet")
        load_source(cfg["data"][role]).to_parquet(paths[role])
    settings = {k: cfg[k] for k in ("data", "prompt_template", "generation")}
    write_overlap(tables=paths, settings=settings, out=str(tmp_path / "o.json"), aligned=word_model)
    rec = json.loads((tmp_path / "o.json").read_text())["truncated_prompts"]
    assert rec == {
        "harmful_eval": {
            "file": str(harmful),
            "limit": 14,
            "rows": 3,
            "too_long": 1,
            "examples": [{"row": 2, "tokens": 15, "prompt": " ".join(["b"] * 12)}],
        }
    }


def test_a_tokenizer_missing_at_planning_is_one_notice(tmp_path, files):
    task, test = files
    cfg = config_with(task, test, allow_overlap=["task/task_eval"])
    cfg["models"].update(base=str(tmp_path), aligned=str(tmp_path))  # a folder with no tokenizer in it
    problems = planning_problems(cfg, {}, notices := [])
    assert problems == [] and notices == []  # nothing loaded: no tokenizer asked for
    from tokensafe.data.sources import check_sources

    tables = {}
    check_sources(cfg["data"], None, tables)
    assert planning_problems(cfg, tables, notices) == []
    [line] = notices[1:]
    assert line.startswith(f"prompt lengths: the tokenizer of models.aligned = {tmp_path} could not be loaded")


def test_truncation_cuts_the_prompt_text_and_keeps_the_template(word_tokenizer):
    ids, cut = fit_prompt_ids(word_tokenizer, "How do I rob a bank ?", "chat", 6)
    assert cut and word_tokenizer.convert_ids_to_tokens(ids) == [
        "<|bos|>",
        "<|user|>",
        "How",
        "do",
        "I",
        "<|assistant|>",
    ]
    assert fit_prompt_ids(word_tokenizer, "a b", "chat", 6) == (
        fit_prompt_ids(word_tokenizer, "a b", "chat", 99)[0],
        False,
    )
    prompts = ["a b", "a b c d e f"]
    with pytest.raises(ValueError, match=r"data.task_eval row 8: prompt of 9 tokens and 4 new tokens exceed"):
        encode_for_generation(word_tokenizer, prompts, "chat", 10, 4, False, "data.task_eval", [3, 8])
    ids, n = encode_for_generation(word_tokenizer, prompts, "chat", 10, 4, True, "data.task_eval", [3, 8])
    assert n == 1 and [len(x) for x in ids] == [5, 6]


def test_overlap_stops_snakemake_before_any_job(tmp_path):
    """data.task and data.task_eval the same file: refused at planning, nothing written under results/."""
    cfg = copy.deepcopy(micro_config())
    gsm = str(REPO / "tests" / "data" / "public" / "gsm8k_test_head60.jsonl")
    cfg["data"]["task"] = {"path": gsm, "format": "gsm8k"}
    cfg["data"]["task_eval"] = {"path": gsm, "format": "gsm8k"}
    proc = snakemake(tmp_path, write_config(cfg, tmp_path), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "data.task_eval: 60 of 60 evaluation prompts are also training prompts of data.task (60 of its 60" in out
    assert f"{gsm} row 1 = {gsm} row 1: 'Janet’s ducks lay 16 eggs" in out
    assert "Job stats" not in out and not (tmp_path / "results").exists()


def test_generation_stops_on_a_prompt_beyond_the_models_positions_or_cuts_it(word_tokenizer):
    """The job-time check where planning had no tokenizer (the embedded world): 16 positions, 8 new tokens."""
    from tokensafe.eval.generation.generate import generate

    from tiny_models import tiny_llama

    model = tiny_llama(len(word_tokenizer), pad_token_id=word_tokenizer.pad_token_id, max_positions=16)
    prompts = ["How do I go ?", "How do I rob a bank ? Step 1 , here is how"]  # 8 and 16 tokens with the template
    cfg = {"max_new_tokens": 8}
    with pytest.raises(ValueError, match=r"data.harmful_eval row 7: prompt of 16 tokens and 8 new tokens exceed"):
        generate(model, word_tokenizer, prompts, "chat", cfg, what="data.harmful_eval", rows=[3, 7])
    out = generate(model, word_tokenizer, prompts, "chat", {**cfg, "truncate_long_prompts": True})
    assert len(out) == 2
