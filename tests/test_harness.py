"""Utility benchmarks through lm-evaluation-harness: results as tidy rows, the custom task, the adapter check on
the model object the harness evaluates, the config checks, and the tables across runs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from tokensafe.eval.utility import benchmark_tables, harness
from tokensafe.eval.utility.benchmark_tasks import benchmark_problems
from tokensafe.io import write_parquet
from tokensafe.world.tokenizer import train_tokenizer

from tiny_models import tiny_llama

RESULTS = {
    "results": {
        "gsm8k": {
            "alias": "gsm8k",
            "exact_match,strict-match": 0.25,
            "exact_match_stderr,strict-match": 0.05,
            "exact_match,flexible-extract": 0.75,
            "exact_match_stderr,flexible-extract": 0.04,
        },
        "tokensafe_task": {"exact_match,none": 0.5, "exact_match_stderr,none": "N/A"},
    },
    "n-samples": {"gsm8k": {"original": 1319, "effective": 100}, "tokensafe_task": {"effective": 20}},
    "n-shot": {"gsm8k": 5, "tokensafe_task": 0},
    "date": 123.0,
    "total_evaluation_time_seconds": "9.1",
    "pretty_env_info": "host details",
    "versions": {"gsm8k": 3.0},
}


def test_tidy_gives_one_row_per_task_metric_and_filter():
    t = harness.tidy(RESULTS)
    assert list(t.columns) == harness.TIDY_COLUMNS
    rows = {(r.task, r.filter): r for r in t.itertuples()}
    assert sorted(rows) == [("gsm8k", "flexible-extract"), ("gsm8k", "strict-match"), ("tokensafe_task", "none")]
    # strict and flexible extraction are separate rows: 50 points apart here, never one number picked silently
    assert rows["gsm8k", "strict-match"].value == 0.25 and rows["gsm8k", "strict-match"].stderr == 0.05
    assert rows["gsm8k", "flexible-extract"].value == 0.75 and rows["gsm8k", "flexible-extract"].n_samples == 100
    assert rows["gsm8k", "strict-match"].num_fewshot == 5
    assert math.isnan(rows["tokensafe_task", "none"].stderr)  # the harness's "N/A" is no number


def test_tidy_refuses_results_without_metrics():
    with pytest.raises(ValueError, match="no metric"):
        harness.tidy({"results": {"x": {"alias": "x"}}})


def test_stable_results_drop_what_changes_between_identical_runs():
    s = harness.stable_results(RESULTS)
    assert set(s) == {"results", "n-samples", "n-shot", "versions"}
    assert "date" in RESULTS  # the harness's dict itself is left alone


def test_the_custom_task_reads_the_given_table(tmp_path):
    data = tmp_path / "task_eval.parquet"
    [name, cfg] = harness.task_list(["gsm8k", "tokensafe_task"], data_file=str(data), max_gen_toks=7)
    assert name == "gsm8k"
    assert cfg["task"] == "tokensafe_task" and cfg["dataset_path"] == "parquet"
    assert cfg["dataset_kwargs"]["data_files"] == {"test": str(data)}
    assert cfg["generation_kwargs"]["max_gen_toks"] == 7 and cfg["generation_kwargs"]["do_sample"] is False
    assert [f["name"] for f in cfg["filter_list"]] == ["strict-match", "flexible-extract"]
    with pytest.raises(ValueError, match="task test set"):
        harness.task_list(["tokensafe_task"], data_file=None, max_gen_toks=7)


# ---------------------------------------------------------------------------- the adapter check


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny chat model folder and two adapters: one fresh (LoRA B = 0, so it changes nothing) and one trained."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("tiny")
    tok = train_tokenizer(["Eva has 3 apples. The answer is 3.", "How many apples are left?"] * 20, vocab_size=300)
    model = tiny_llama(len(tok), hidden=32, intermediate=64, heads=2)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    torch.manual_seed(0)
    fresh = get_peft_model(tiny_llama(len(tok), hidden=32, intermediate=64, heads=2), cfg)
    fresh.save_pretrained(root / "fresh")
    with torch.no_grad():
        for name, p in fresh.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    fresh.save_pretrained(root / "trained")
    return root


def _lm(root: Path, adapter: str | None):
    return harness.build_lm(
        aligned=str(root / "model"), adapter=adapter, dtype="float32", batch_size=4, backend="hf", vllm_cfg=None
    )


def test_a_trained_adapter_is_seen_on_the_harness_model(tiny_model_dir):
    adapter = str(tiny_model_dir / "trained")
    assert harness.check_adapter_applied(_lm(tiny_model_dir, adapter), adapter) > 0


def test_an_adapter_that_changes_nothing_stops_the_stage(tiny_model_dir):
    adapter = str(tiny_model_dir / "fresh")  # LoRA B starts at 0: the model's output is the aligned model's
    with pytest.raises(harness.AdapterNotApplied, match="changes no logit"):
        harness.check_adapter_applied(_lm(tiny_model_dir, adapter), adapter)


def test_an_adapter_the_harness_did_not_load_stops_the_stage(tiny_model_dir):
    # what a wrapper that drops the peft argument evaluates: the bare aligned model
    with pytest.raises(harness.AdapterNotApplied, match="not the model with the adapter"):
        harness.check_adapter_applied(_lm(tiny_model_dir, None), str(tiny_model_dir / "trained"))


def test_no_adapter_no_check(tiny_model_dir):
    assert harness.check_adapter_applied(_lm(tiny_model_dir, None), None) is None


# ---------------------------------------------------------------------------- config checks


def test_benchmark_settings_that_do_not_go_together_are_refused(tmp_path):
    assert benchmark_problems({"tasks": ["tokensafe_task"], "apply_chat_template": True}) == []
    [p] = benchmark_problems({"tasks": ["tokensafe_task"], "fewshot_as_multiturn": True})
    assert "fewshot_as_multiturn needs utility_benchmarks.apply_chat_template" in p
    [p] = benchmark_problems({"tasks": ["tokensafe_task"], "include_path": str(tmp_path / "nope")})
    assert "include_path" in p and "no such folder" in p
    [p] = benchmark_problems({"tasks": ["tokensafe_task"]}, task_metric="sst2")
    assert "tokensafe_task scores numeric answers" in p
    assert p.endswith("or set utility_benchmarks.tasks: [] to turn the stage off")


def test_an_unknown_task_name_is_refused_with_close_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the task index is cached under the run directory's .snakemake/
    [p] = benchmark_problems({"tasks": ["gsm8k", "hellaswag", "gsm8kk"]})
    assert "no task, group or tag 'gsm8kk'" in p and "gsm8k" in p
    assert p.endswith("; or set utility_benchmarks.tasks: [] to turn the stage off")
    assert list((tmp_path / ".snakemake" / "tokensafe").glob("lm_eval_tasks-*.json"))  # the next plan reads this


# ---------------------------------------------------------------------------- tables across runs


def _run_table(tmp_path: Path, name: str, strict: float, flexible: float) -> str:
    rows = pd.DataFrame(
        {
            "task": ["gsm8k", "gsm8k"],
            "metric": ["exact_match", "exact_match"],
            "filter": ["strict-match", "flexible-extract"],
            "value": [strict, flexible],
            "stderr": [0.02, 0.04],
            "n_samples": [100, 100],
            "num_fewshot": [5, 5],
        }
    )
    path = tmp_path / f"{name}.parquet"
    meta = {"benchmarks": {"apply_chat_template": True, "backend": "hf"}, "lm_eval_version": "0.4.13"}
    write_parquet(rows, path, metadata=meta)
    return str(path)


def test_tables_across_runs(tmp_path):
    runs = [
        dict(method="sft", poison_ratio=0.1, seed=1, lm_eval=_run_table(tmp_path, "a", 0.5, 0.6)),
        dict(method="sft", poison_ratio=0.1, seed=2, lm_eval=_run_table(tmp_path, "b", 0.7, 0.8)),
        dict(method="initial", poison_ratio=0.1, seed=1, lm_eval=_run_table(tmp_path, "c", 0.1, 0.2)),
    ]
    tidy = benchmark_tables.collect(runs)
    assert list(tidy.columns) == benchmark_tables.LM_EVAL_COLUMNS and len(tidy) == 6
    assert set(tidy.lm_eval_version) == {"0.4.13"} and tidy.apply_chat_template.all()
    w = benchmark_tables.wide(tidy)
    assert list(w.columns) == [
        "method",
        "poison_ratio",
        "seed",
        "lm_eval:gsm8k:exact_match:flexible-extract",
        "lm_eval:gsm8k:exact_match:strict-match",
    ]
    sft2 = w[(w.method == "sft") & (w.seed == 2)].iloc[0]
    assert sft2["lm_eval:gsm8k:exact_match:strict-match"] == 0.7

    def order(methods):
        return ["initial"] + sorted(set(methods) - {"initial"})

    md = benchmark_tables.section(tidy, order)
    # mean over the two sft seeds (50 and 70 -> 60.0) +- the mean stderr (2.0), n = 2 seeds
    assert "| sft | 60.0 +- 2.0 n=2 |" in md and "| initial | 10.0 +- 2.0 n=1 |" in md
    assert "**gsm8k** - exact_match (flexible-extract), 5-shot, 100 samples" in md
    assert md.index("| initial |") < md.index("| sft |")
    assert benchmark_tables.section(benchmark_tables.collect([]), order) == "No lm-eval results."
