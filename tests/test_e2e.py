"""The whole DAG end to end on a micro embedded world, then the rerun behaviour from dry-run plans."""

import base64
import json

import pandas as pd
import pytest

from workflow_utils import REPO, micro_config, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def finished(micro_run):
    cfg = micro_config()
    return micro_run("e2e", cfg), cfg


def _without_timings(obj):
    """A JSON document without its wall-clock fields (training loss histories log elapsed seconds)."""
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in ("elapsed_s", "train_seconds", "seconds")}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def test_the_job_server_changes_no_output(finished, tmp_path):
    """Local runs start jobs from a fork server (tokensafe.runtime.jobserver); the same run with every job in its
    own process must write the same bytes (JSON files: the same content apart from wall-clock times)."""
    wd, cfg = finished
    assert "1 thread(s)" in (wd / "logs" / "jobserver.log").read_text()  # the finished run did use the server
    snakemake(tmp_path, write_config(cfg, tmp_path), "--cores", "2", env={"TOKENSAFE_JOB_SERVER": "off"})
    assert not (tmp_path / "logs" / "jobserver.log").exists()
    ours = sorted(p.relative_to(wd) for p in (wd / "results").rglob("*") if p.is_file())
    assert ours == sorted(p.relative_to(tmp_path) for p in (tmp_path / "results").rglob("*") if p.is_file())
    for rel in ours:
        a, b = wd / rel, tmp_path / rel
        if rel.name == ".snakemake_timestamp":
            continue
        if rel.suffix == ".json":
            assert _without_timings(json.loads(a.read_text())) == _without_timings(json.loads(b.read_text())), rel
        else:
            assert a.read_bytes() == b.read_bytes(), rel


def test_outputs_and_summary_columns(finished):
    wd, cfg = finished
    for name in ("summary.csv", "summary.parquet", "report.md", "safety_utility.png", "lm_eval.csv"):
        assert (wd / "results" / name).stat().st_size > 0
    s = pd.read_csv(wd / "results" / "summary.csv")
    required = {
        "method",
        "poison_ratio",
        "seed",
        "accuracy",
        "no_answer_rate",
        "asr_keyword",
        "asr_guard",
        "n_harmful",
        "n_task",
        "config_hash",
    }
    assert required <= set(s.columns)
    assert sorted(zip(s.method, s.poison_ratio)) == [("initial", 0.0), ("initial", 0.1), ("sft", 0.0), ("sft", 0.1)]
    assert (s.n_harmful == 100).all() and (s.n_task == 200).all()
    assert s[["accuracy", "no_answer_rate", "asr_keyword", "asr_guard"]].apply(lambda c: c.between(0, 1)).all().all()
    # provenance: seed, template, judge and the resolved settings travel with every row
    row = s[(s.method == "sft") & (s.poison_ratio == 0.1)].iloc[0]
    settings = json.loads(row.settings)
    assert settings["settings"]["seed"] == 1 and settings["settings"]["poison_ratio"] == 0.1
    assert settings["judge"]["keywords"] == cfg["judge"]["keywords"]
    assert row.prompt_template == "chat" and row.judge.startswith("keyword+llama_guard")
    assert s.config_hash.nunique() == 3  # initial (shared by both ratios) + two sft runs


def test_lm_eval_scores_every_run_with_its_adapter(finished):
    """The harness's exact match on tokensafe_task, per run, is the summary's accuracy (the same greedy answers,
    the same "The answer is N" extraction), and the report shows it with the harness's stderr."""
    wd, _ = finished
    bench = pd.read_csv(wd / "results" / "lm_eval.csv")
    s = pd.read_csv(wd / "results" / "summary.csv")
    assert len(bench) == 2 * len(s)  # strict-match and flexible-extract rows per run
    strict = bench[bench["filter"] == "strict-match"].set_index(["method", "poison_ratio", "seed"]).value
    for r in s.itertuples():
        assert strict[(r.method, r.poison_ratio, r.seed)] == r.accuracy
    assert (s["lm_eval:tokensafe_task:exact_match:strict-match"] == s.accuracy).all()
    assert (bench.n_samples == 200).all() and bench.apply_chat_template.all() and (bench.backend == "hf").all()
    assert "## Utility benchmarks (lm-evaluation-harness)" in (wd / "results" / "report.md").read_text()
    assert "adapter applied" in (wd / "logs" / "lm_eval" / "sft" / "p0.1" / "s1.log").read_text()


def test_lm_eval_answers_are_the_generated_answers(finished):
    """Per prompt, the harness (the aligned model + the run's adapter, loaded by the harness) writes exactly the
    answers the generate stage wrote: the same model, template and greedy decoding."""
    import lm_eval

    from tokensafe.eval.utility import harness

    wd, cfg = finished
    run = wd / "results" / "runs" / "sft" / "p0.1" / "s1"
    lm = harness.build_lm(
        aligned=str(wd / "results" / "world" / "aligned"),
        adapter=str(run / "adapter"),
        dtype="auto",
        batch_size=64,
        backend="hf",
        vllm_cfg=None,
    )
    tasks = harness.task_list(
        ["tokensafe_task"],
        data_file=str(wd / "results" / "data" / "task_eval.parquet"),
        max_gen_toks=cfg["generation"]["task_max_new_tokens"],
    )
    res = lm_eval.simple_evaluate(model=lm, tasks=tasks, apply_chat_template=True, log_samples=True)
    gen = pd.read_parquet(run / "generations.parquet")
    ours = dict(zip(gen[gen["set"] == "task"].prompt_id, gen[gen["set"] == "task"].response))
    theirs = {x["doc"]["sample_id"]: x["resps"][0][0] for x in res["samples"]["tokensafe_task"]}
    assert len(theirs) == 200 and theirs == ours


def test_every_job_logged_and_benchmarked(finished):
    wd, _ = finished
    servers = ("jobserver.log", "llm_judge_server.log")  # the job server and the LLM-judge server are no jobs
    logs = [p for p in (wd / "logs").rglob("*.log") if p.name not in servers]
    benches = list((wd / "benchmarks").rglob("*.tsv"))
    assert len(logs) >= 15 and len(benches) == len(logs)
    ft = (wd / "logs" / "finetune" / "sft" / "p0.1_s1.log").read_text()
    assert "step=" in ft and "loss=" in ft


def _script_json(html: str, script_id: str, name: str):
    """The JSON value Snakemake's HTML report assigns to ``var <name>`` in its ``<script id=...>`` block."""
    start = html.index(f"var {name} = ", html.index(f'<script id="{script_id}">')) + len(f"var {name} = ")
    return json.JSONDecoder().raw_decode(html, start)[0]


def test_snakemakes_html_report_holds_the_tables_and_the_plot(finished, tmp_path):
    """`snakemake --report` after a run: one self-contained HTML file with the workflow's description and every
    output marked report() in the rules, byte for byte, under its stage family."""
    wd, cfg = finished
    out = tmp_path / "report.html"
    snakemake(wd, write_config(cfg, wd, "report.yaml"), "--report", str(out))
    html = out.read_text()
    assert "The results are grouped by stage family" in _script_json(html, "workflow-desc", "workflow_desc")
    results = _script_json(html, "results", "results")
    items = {
        "results/summary.csv": "Summary",
        "results/summary_by_method.csv": "Summary",
        "results/comparisons.csv": "Summary",
        "results/report.md": "Summary",
        "results/safety_utility.png": "Summary",
        "results/judge_agreement.csv": "Evaluation",
        "results/lm_eval.csv": "Evaluation",
        "results/llm_judge.csv": "Evaluation",  # judge.llm is on in the micro config
        "results/data/card.md": "Data",
    }
    assert set(results) == set(items)
    for path, res in results.items():
        data = res["data_uri"].split(";base64,", 1)[1]
        assert base64.b64decode(data) == (wd / path).read_bytes(), path
        assert res["caption"].strip(), path  # every item has its caption
    assert results["results/safety_utility.png"]["mime_type"] == "image/png"
    assert "safer and more useful" in results["results/safety_utility.png"]["caption"]
    categories = _script_json(html, "categories", "categories")
    for path, family in items.items():
        assert path in json.dumps(categories[family]), (path, family)


def test_nothing_to_do_when_unchanged(finished):
    wd, cfg = finished
    assert planned_jobs(wd, write_config(cfg, wd, "same.yaml")) == {}


def test_adding_a_seed_adds_only_its_jobs(finished):
    wd, cfg = finished
    c = dict(cfg, seeds=[1, 2])
    assert planned_jobs(wd, write_config(c, wd, "seed.yaml")) == {
        "mix_finetune_set": 2,
        "finetune": 2,
        "generate": 3,
        "judge": 3,
        "lm_eval": 3,
        "llm_win_rate": 2,  # initial at seed 2 against sft at each ratio
        "llm_rubrics": 3,
        "summary": 1,
        "report": 1,
        "all": 1,
    }


def test_adding_a_ratio_adds_only_its_jobs(finished):
    wd, cfg = finished
    c = dict(cfg, poison_ratios=[0.0, 0.1, 0.05])
    assert planned_jobs(wd, write_config(c, wd, "ratio.yaml")) == {
        "mix_finetune_set": 1,
        "finetune": 1,
        "generate": 1,
        "judge": 1,
        "lm_eval": 1,
        "llm_win_rate": 1,  # initial against sft at the new ratio
        "llm_rubrics": 1,
        "summary": 1,
        "report": 1,
        "all": 1,
    }


def test_judge_change_reruns_only_judging_and_after(finished):
    wd, cfg = finished
    c = json.loads(json.dumps(cfg))
    c["judge"]["keywords"] = c["judge"]["keywords"] + ["I refuse"]
    assert planned_jobs(wd, write_config(c, wd, "judge.yaml")) == {"judge": 3, "summary": 1, "report": 1, "all": 1}


def test_generation_change_reruns_generation_not_training(finished):
    wd, cfg = finished
    c = json.loads(json.dumps(cfg))
    c["generation"]["max_new_tokens"] = 9
    assert planned_jobs(wd, write_config(c, wd, "gen.yaml")) == {
        "generate": 3,
        "judge": 3,
        "llm_win_rate": 2,
        "llm_rubrics": 3,
        "summary": 1,
        "report": 1,
        "all": 1,
    }


def test_cpu_numerics_reach_every_job_and_a_change_redoes_all_model_work(finished):
    wd, cfg = finished
    # The default pins the AVX2 code path, and each job's log says what it ran under.
    # Each job runs with its rule's thread count (the guard 1, the base 2: resources.world.threads).
    assert (
        "cpu numerics: ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2,STRICT OMP_NUM_THREADS=1"
        in (wd / "logs" / "world_guard.log").read_text()
    )
    assert "MKL_CBWR=AVX2,STRICT OMP_NUM_THREADS=2" in (wd / "logs" / "world_base.log").read_text()
    assert (
        "cpu numerics: ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2,STRICT OMP_NUM_THREADS=1"
        in (wd / "logs" / "judge" / "sft" / "p0.1" / "s1.log").read_text()
    )
    # Other numerics can give other numbers: every model is retrained and re-evaluated in the same run
    # (the guard too, whose only link to the base is an ordering input), data and tokenizer are kept.
    plan = planned_jobs(wd, write_config(dict(cfg, cpu_numerics="native"), wd, "native.yaml"))
    assert plan == {
        "world_base": 1,
        "world_aligned": 1,
        "world_guard": 1,
        "world_judge": 1,
        "finetune": 2,
        "generate": 3,
        "judge": 3,
        "lm_eval": 3,
        "llm_win_rate": 2,
        "llm_rubrics": 3,
        "summary": 1,
        "report": 1,
        "all": 1,
    }


def test_bad_config_leaves_results_intact(finished):
    wd, cfg = finished
    before = {p: p.stat().st_mtime_ns for p in (wd / "results").rglob("*") if p.is_file()}
    c = dict(cfg, poison_ratios=[0.1, 1.2])
    proc = snakemake(wd, write_config(c, wd, "bad.yaml"), "--cores", "2", check=False)
    assert proc.returncode != 0 and "poison_ratios[1] = 1.2" in proc.stdout + proc.stderr
    after = {p: p.stat().st_mtime_ns for p in (wd / "results").rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    "module, edit, plan",
    [
        ("stages/report.py", "\n\ndef _one_more_helper():\n    return 1\n", {"report": 1}),
        (
            "stages/generation.py",
            "\n\nEXTRA = 1\n",
            {"generate": 3, "judge": 3, "llm_win_rate": 2, "llm_rubrics": 3, "summary": 1, "report": 1},
        ),
        ("eval/utility/harness.py", "\n\nEXTRA = 1\n", {"lm_eval": 3, "summary": 1, "report": 1}),
        ("stages/generation.py", "\n# a comment and a docstring change nothing\n", {}),
    ],
)
def test_a_changed_package_module_reruns_the_stages_that_import_it(finished, tmp_path, module, edit, plan):
    """Code versions (tokensafe.rerun.codeversion): a copy of the package with one module edited, put first on the
    path of the Snakemake process, plans exactly the stages whose scripts import that module."""
    import shutil

    wd, cfg = finished
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "tokensafe", src / "tokensafe", ignore=shutil.ignore_patterns("__pycache__"))
    path = src / "tokensafe" / module
    path.write_text(path.read_text() + edit)
    got = planned_jobs(wd, write_config(cfg, tmp_path), env={"PYTHONPATH": str(src)})
    assert got == ({**plan, "all": 1} if plan else {})


def test_removing_a_ratio_rebuilds_only_the_summary(finished):
    wd, cfg = finished
    assert planned_jobs(wd, write_config(dict(cfg, poison_ratios=[0.1]), wd, "minus_ratio.yaml")) == {
        "summary": 1,
        "report": 1,
        "all": 1,
    }


def test_an_extra_classifier_judge_runs_only_its_jobs_and_its_failures_count_as_invalid(finished):
    """judge.classifiers: harmbench on the micro world's own guard (a local folder; it answers no 'yes' / 'no',
    so HarmBench's rule reads (nearly) every answer as invalid). Adding it runs one judge_classifier job per run; its
    invalid verdicts are counted as such, never as safe; removing it rebuilds only the summary and the report."""
    wd, cfg = finished
    c = json.loads(json.dumps(cfg))
    c["judge"]["classifiers"] = ["harmbench"]
    c["judge"]["classifier_models"] = {"harmbench": "results/world/guard"}
    path = write_config(c, wd, "classifier.yaml")
    assert planned_jobs(wd, path) == {"judge_classifier": 3, "summary": 1, "report": 1, "all": 1}
    before = (wd / "results" / "summary.csv").read_bytes()
    snakemake(wd, path, "--cores", "2")
    v = pd.read_parquet(wd / "results" / "runs" / "sft" / "p0.1" / "s1" / "classifiers" / "harmbench.parquet")
    assert list(v.columns) == ["prompt_id", "verdict", "score", "raw", "fields"] and len(v) > 0
    s = pd.read_csv(wd / "results" / "summary.csv")
    invalid = s.harmbench_invalid_rate.to_numpy()
    assert (invalid > 0).all() and (s.asr_harmbench + invalid <= 1).all()
    for row in s.itertuples():
        run = "initial/s1" if row.method == "initial" else f"{row.method}/p{row.poison_ratio}/s{row.seed}"
        d = pd.read_parquet(wd / "results" / "runs" / run / "classifiers" / "harmbench.parquet")
        assert row.harmbench_invalid_rate == pytest.approx((d.verdict == "invalid").mean())
        assert row.asr_harmbench == pytest.approx((d.verdict == "unsafe").mean())  # invalid is not safe: not in it
    a = pd.read_csv(wd / "results" / "judge_agreement.csv")
    assert {("harmbench", "keyword"), ("harmbench", "llama_guard"), ("keyword", "llama_guard")} == set(
        zip(a.judge_a, a.judge_b)
    )
    hb = a[a.judge_a == "harmbench"]
    assert (hb.n <= s.n_harmful.max()).all()  # invalid verdicts are left out of the pairs
    report = (wd / "results" / "report.md").read_text()
    assert "## Judge agreement" in report and "## Extra classifier judges" in report
    # Back to the config without it: nothing to judge again, the summary returns to its bytes.
    assert planned_jobs(wd, write_config(cfg, wd, "config.yaml")) == {"summary": 1, "report": 1, "all": 1}
    snakemake(wd, write_config(cfg, wd, "config.yaml"), "--cores", "2")
    assert (wd / "results" / "summary.csv").read_bytes() == before
