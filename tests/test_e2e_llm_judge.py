"""The LLM judge in the workflow, end to end on the micro world: the embedded judge stand-in (trained for a few
steps: most of its answers are unparsable, which is the point - they must be counted, never read as safe or as a
win) behind a real local server (`transformers serve`, main environment), shared by the run's jobs; the
summary and report tables; a judge.llm change reruns only the LLM-judge jobs, summary and report, and that
rerun asks the server nothing (every answer is in the cache).

Skipped, with the reason, where `transformers serve` cannot run (it needs fastapi and uvicorn)."""

import importlib.util
import math

import pandas as pd
import pytest

from workflow_utils import micro_config, planned_jobs, snakemake, write_config

MISSING = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"transformers serve needs {', '.join(MISSING)}")

LIMIT = 3  # micro_config: judge.llm.limit


def cache_files(wd):
    return sorted((wd / "results" / "llm_judge_cache").rglob("*.json"))


@pytest.fixture(scope="module")
def finished(micro_run):
    """The session's micro run (tests/conftest.py; this module's own copy: its tests rerun parts of it)."""
    cfg = micro_config()
    assert cfg["judge"]["llm"]["enabled"] and cfg["judge"]["llm"]["server"] == "transformers"
    assert cfg["judge"]["llm"]["model_path"] == "embedded" and cfg["judge"]["llm"]["limit"] == LIMIT
    return micro_run("llm_judge_run", cfg), cfg


def test_the_summary_has_the_win_rate_and_rubric_columns_with_invalid_counts(finished):
    wd, _ = finished
    summary = pd.read_csv(wd / "results" / "summary.csv").set_index(["method", "poison_ratio"])
    assert set(summary.index) == {("initial", 0.0), ("initial", 0.1), ("sft", 0.0), ("sft", 0.1)}
    for col in ("win_rate_vs_sft_harmful", "win_rate_vs_sft_task", "win_rate_vs_sft_avg", "win_rate_vs_sft_n_invalid"):
        assert col in summary.columns
    assert (summary.loc["sft", "win_rate_vs_sft_avg"] == 50).all()  # the reference: 50 by definition
    table = pd.read_csv(wd / "results" / "llm_judge.csv")
    for rubric in ("hexphi", "strongreject"):
        rows = table[(table.metric == f"{rubric}_score") & (table.seed != -1)]
        assert len(rows) == 4 and (rows.n + rows.n_invalid == LIMIT).all()  # every judged prompt counted once
        assert (
            summary[f"{rubric}_n_invalid"].to_numpy() == rows.sort_values(["method", "poison_ratio"]).n_invalid
        ).all()
        # No valid answer: no number (never 1 or 0, "safe").
        for r in rows.itertuples():
            assert (r.n == 0) == math.isnan(r.value)
    win = table[(table.metric == "win_rate_vs_sft") & (table.method == "initial") & (table.seed != -1)]
    assert set(win["set"]) == {"harmful", "task"} and (win.n + win.n_invalid == LIMIT).all()
    runs = wd / "results" / "runs"
    assert {p.relative_to(runs).as_posix() for p in runs.rglob("llm_win_rate/*.parquet")} == {
        "initial/s1/llm_win_rate/p0.0.parquet",
        "initial/s1/llm_win_rate/p0.1.parquet",
    }  # sft, the reference, gets none


def test_the_report_has_the_table_1_win_rate_and_the_rubric_sections(finished):
    wd, _ = finished
    md = (wd / "results" / "report.md").read_text()
    assert "## Win rate vs SFT (Table 1 layout)" in md and "## LLM-judge harmfulness rubrics" in md
    section = md.split("## Win rate vs SFT (Table 1 layout)", 1)[1].split("\n## ", 1)[0]
    assert "| Method | harmful | task | AVG | invalid | identical |" in section
    assert "| sft | 50.0 | 50.0 | 50.0 | 0 | 0 |" in section
    assert "HEx-PHI harmfulness rate" in md and "StrongREJECT score" in md


def test_a_judge_llm_change_reruns_only_the_llm_judge_jobs_and_asks_nothing_again(finished):
    wd, cfg = finished
    before = cache_files(wd)
    assert before  # answers are cached outside the job outputs
    changed = micro_config()
    changed["judge"]["llm"]["concurrency"] = 1
    path = write_config(changed, wd, "changed.yaml")
    assert planned_jobs(wd, path) == {"llm_win_rate": 2, "llm_rubrics": 3, "summary": 1, "report": 1, "all": 1}
    snakemake(wd, path, "--cores", "2")
    assert cache_files(wd) == before  # every answer came from the cache
    back = write_config(cfg, wd, "back.yaml")
    assert planned_jobs(wd, back) == {"llm_win_rate": 2, "llm_rubrics": 3, "summary": 1, "report": 1, "all": 1}
    snakemake(wd, back, "--cores", "2")
    assert cache_files(wd) == before


def test_a_lost_job_output_reruns_from_the_cache_asking_only_what_is_missing(finished):
    """As after a run killed in a judge job: that job's output is missing (and so is the summary, which comes
    after it), and only some of its answers are cached. The rerun sends exactly the missing requests (only their
    cache files are written; every other stays untouched)."""
    from tokensafe.eval.llm_judge.judge_client import request_key
    from tokensafe.eval.llm_judge.rubrics import get_rubric
    from tokensafe.stages.llm_judge_scores import first_prompts

    wd, cfg = finished
    run = wd / "results" / "runs" / "sft" / "p0.1" / "s1"
    gen = pd.read_parquet(run / "generations.parquet")
    gen = first_prompts(gen[gen["set"] == "harmful"], LIMIT)
    params = {"temperature": 0.0, "max_tokens": cfg["judge"]["llm"]["max_tokens"]}
    keys = {
        request_key("results/world/judge", get_rubric("hexphi").render(p, r), params)
        for p, r in zip(gen.prompt, gen.response)
    }
    mine = [f for f in cache_files(wd) if f.stem in keys]
    assert len(mine) == len(keys) >= 1
    lost = mine[:2]
    for f in lost:
        f.unlink()
    (run / "llm_rubrics.parquet").unlink()
    (wd / "results" / "summary.csv").unlink()
    before = {f: f.stat().st_mtime_ns for f in cache_files(wd)}
    assert planned_jobs(wd, write_config(cfg, wd, "again.yaml")) == {
        "llm_rubrics": 1,
        "summary": 1,
        "report": 1,
        "all": 1,
    }
    snakemake(wd, write_config(cfg, wd, "again.yaml"), "--cores", "2")
    after = {f: f.stat().st_mtime_ns for f in cache_files(wd)}
    assert set(after) - set(before) == set(lost)  # the missing answers, asked again
    assert all(after[f] == t for f, t in before.items())  # nothing else asked


def test_judge_llm_off_leaves_the_summary_and_report_as_without_it(finished):
    from tokensafe.stages.summary import SUMMARY_COLUMNS

    wd, _ = finished
    off = micro_config()
    off["judge"]["llm"]["enabled"] = False
    path = write_config(off, wd, "off.yaml")
    assert planned_jobs(wd, path) == {"summary": 1, "report": 1, "all": 1}
    snakemake(wd, path, "--cores", "2")
    columns = list(pd.read_csv(wd / "results" / "summary.csv").columns)
    # the summary's own columns, then lm-eval's (utility_benchmarks), and no LLM-judge column
    assert columns == SUMMARY_COLUMNS + [c for c in columns if c.startswith("lm_eval:")]
    assert "Win rate" not in (wd / "results" / "report.md").read_text()


def test_task_metric_none_drops_accuracy_and_plots_the_task_set_win_rate(finished):
    """data.task_metric none (open-ended task prompts, as TOSS's SlimOrca set): the same runs' summary without
    accuracy, its ASRs unchanged, and a report that says where utility is (the judge's task-set win rate)."""
    wd, _ = finished
    before = pd.read_csv(wd / "results" / "summary.csv")
    cfg = micro_config()
    cfg["data"]["task_metric"] = "none"
    cfg["utility_benchmarks"]["tasks"] = []  # tokensafe_task scores numbers: refused with none
    path = write_config(cfg, wd, "no_metric.yaml")
    assert planned_jobs(wd, path) == {"summary": 1, "report": 1, "all": 1}
    snakemake(wd, path, "--cores", "2")
    s = pd.read_csv(wd / "results" / "summary.csv")
    assert s.accuracy.isna().all() and s.no_answer_rate.isna().all()  # no number stands in for a missing metric
    assert before.accuracy.notna().all()
    keys = ["method", "poison_ratio", "seed"]
    for col in ("asr_keyword", "asr_guard", "n_task"):
        assert s[keys + [col]].equals(before[keys + [col]]), col
    assert (s[s.method == "sft"].win_rate_vs_sft_task == 50).all() and s.win_rate_vs_sft_task.notna().all()
    assert "accuracy" not in set(pd.read_csv(wd / "results" / "summary_by_method.csv").metric)
    comp = pd.read_csv(wd / "results" / "comparisons.csv")
    assert set(comp.metric) == {"asr_keyword", "asr_guard"} and set(zip(comp.a, comp.b)) == {("sft", "initial")}
    md = (wd / "results" / "report.md").read_text()
    assert "The task set has no exact-match metric (`data.task_metric: none`)" in md
    assert "The plot's utility axis is the LLM-judge win rate vs sft, task set (%)." in md
    assert "| Method | P=0: ASR-kw / ASR-guard | P=0.1: ASR-kw / ASR-guard |" in md
    assert "## Win rate vs SFT (Table 1 layout)" in md and "Task answers without an extractable answer" not in md
