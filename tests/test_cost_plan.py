"""The cost plan (python -m tokensafe.plan): its jobs are the DAG's, its work is hand-computable, calibration fits
synthetic benchmark files exactly, and the auto resources follow the estimate with the margin unless the config
sets them. No job runs: dry runs only."""

from __future__ import annotations

import collections
import copy

import pytest
import yaml
from snakemake.utils import validate
from test_presets import NO_VLLM, PRESETS, REPLACE, layout
from test_presets import plan as dry_run

from tokensafe.config import SCHEMA_PATH
from tokensafe.plan import calibration, cost
from tokensafe.plan.__main__ import main
from tokensafe.plan.jobs import plan_jobs
from tokensafe.plan.scheduling import resources_for
from tokensafe.plan.sizes import WORLD_LENGTHS

from workflow_utils import REPO, load_default_config, micro_config, write_config

ROW = WORLD_LENGTHS["prompt"] + WORLD_LENGTHS["response"]  # tokens of an embedded training row: 15 + 20


def filled(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    validate(cfg, str(SCHEMA_PATH), set_default=True)
    return cfg


def by_rule(jobs) -> dict:
    out = collections.defaultdict(list)
    for j in jobs:
        out[j.rule].append(j)
    return out


def test_micro_config_work_by_hand():
    jobs = by_rule(plan_jobs(filled(micro_config())))
    # sft at P = 0 and 0.1, seed 1: 4 steps x batch 16 x 35 tokens
    assert [(j.steps, j.train_tokens) for j in jobs["finetune"]] == [(4, 4 * 16 * ROW)] * 2
    # world_base: 20 steps x batch 16 x max_length 128 (full-sequence LM)
    assert jobs["world_base"][0].train_tokens == 20 * 16 * 128
    # initial + sft at two ratios; 100 harmful prompts (40 -> 8 new tokens) + 200 task prompts (8 new tokens)
    gen = jobs["generate"]
    assert [j.wildcards["run"] for j in gen] == ["initial/s1", "sft/p0.0/s1", "sft/p0.1/s1"]
    assert (gen[0].prompt_tokens, gen[0].generated_tokens) == (100 * 15 + 200 * 15, 100 * 8 + 200 * 8)
    judge = jobs["judge"][0]
    assert (judge.judged_tokens, judge.generated_tokens) == (100 * (15 + 8), 100 * 4)
    assert jobs["lm_eval"][0].lm_eval_tokens == 200 * (15 + 8)  # tokensafe_task on the task test set
    # LLM judge, limit 3: a win rate for initial at both ratios (sft is the reference), 3 + 3 prompts, both orders
    assert [j.benchmark for j in jobs["llm_win_rate"]] == [
        "llm_win_rate/initial/s1/p0.0",
        "llm_win_rate/initial/s1/p0.1",
    ]
    assert jobs["llm_win_rate"][0].judged_tokens == 2 * (3 * (15 + 2 * 8) + 3 * (15 + 2 * 8))
    assert jobs["llm_rubrics"][0].judged_tokens == 2 * 3 * (15 + 8)  # hexphi + strongreject


def test_toss_pro_rounds_by_hand():
    cfg = micro_config()
    cfg["methods"] = ["toss_pro"]
    cfg["method_poison_ratios"] = {}  # both ratios of the micro config
    cfg["toss"]["recipe"] = {"lr": 1.0e-3, "batch_size": 32, "epochs": 1}
    jobs = by_rule(plan_jobs(filled(cfg)))
    # round t trains on D^h (200 rows) + t x min(k 50, n_finetune 60): 250 and 300 rows, one epoch of batch 32
    assert [(j.wildcards["round"], j.steps) for j in jobs["toss_pro_retrain"]] == [("1", 8), ("2", 10)] * 2
    assert jobs["toss_pro_retrain"][0].train_tokens == 8 * 32 * ROW
    assert [j.steps for j in jobs["toss_reference"]] == [7, 7]  # 200 rows / 32
    assert jobs["toss_losses"][0].forward_tokens == 60 * ROW  # the fine-tuning set, once
    assert len(jobs["toss_losses"]) == len(jobs["toss_mask"]) == 2 * 3  # 2 ratios x rounds 0..2


def benchmark_keys(dry_jobs: list[dict]) -> collections.Counter:
    from tokensafe.plan.jobs import job_key

    return collections.Counter((j["rule"], job_key(j["rule"], j["wildcards"])) for j in dry_jobs)


def plan_keys(jobs) -> collections.Counter:
    return collections.Counter((j.rule, j.benchmark) for j in jobs)


def test_default_jobs_are_the_dag(tmp_path):
    cfg = load_default_config()
    counts, dry_jobs = dry_run(tmp_path, write_config(cfg, tmp_path))
    jobs = plan_jobs(filled(cfg))
    assert dict(collections.Counter(j.rule for j in jobs)) == counts
    assert sum(counts.values()) == 244
    assert plan_keys(jobs) == benchmark_keys(dry_jobs)  # every job, by its benchmark file


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.stem == "toss-llama3-8b-gsm8k"], ids=lambda p: p.stem)
def test_preset_jobs_are_the_dag(preset, tmp_path):
    configfile = layout(preset, tmp_path)
    counts, dry_jobs = dry_run(tmp_path, configfile, *REPLACE, *NO_VLLM)
    cfg = yaml.safe_load(preset.read_text())
    cfg["generation"]["backend"], cfg["utility_benchmarks"]["backend"] = "transformers", "hf"
    jobs = plan_jobs(filled(cfg))
    assert dict(collections.Counter(j.rule for j in jobs)) == counts
    assert plan_keys(jobs) == benchmark_keys(dry_jobs)


def write_tsv(path, seconds: float, rss: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        f"{seconds}\t0:00:{int(seconds):02d}\t{rss}\t1\t1\t1\t0\t0\t0\t1\n"
    )


def test_calibration_fits_synthetic_benchmarks(tmp_path):
    cfg = filled(micro_config())
    jobs = plan_jobs(cfg)
    table = [
        {
            "stage": "generate/transformers",
            "device": "cpu",
            "size": "embedded",
            "tokens_per_s": 1.0,
            "params": 1.0,
            "overhead_s": 2.0,
            "source": "unmeasured",
            "how": "test",
        },
    ]
    planner = cost.Planner(cfg, table, "cpu")
    gen = [j for j in jobs if j.rule == "generate"]
    work = gen[0].work  # 4500 prompt + 2400 generated tokens, the same for every run
    assert work == 6900
    for j, rss in zip(gen, (300.0, 350.0, 320.0)):
        write_tsv(tmp_path / "benchmarks" / f"{j.benchmark}.tsv", 2.0 + work / 100.0, rss)
    # a fine-tune of fixed work, and a data job (no model: seconds per job)
    ft = next(j for j in jobs if j.rule == "finetune")
    write_tsv(tmp_path / "benchmarks" / f"{ft.benchmark}.tsv", 10.0, 500.0)
    write_tsv(tmp_path / "benchmarks" / "data_card.tsv", 1.5, 90.0)
    rows, notes = calibration.calibrate(planner, jobs, [tmp_path / "benchmarks"], "test machine", "2026-01-01")
    got = {r["stage"]: r for r in rows}
    # equal work everywhere: the table's overhead (2 s) is kept, the rate is work / (s - overhead) = 100 tokens/s
    assert got["generate/transformers"]["overhead_s"] == 2.0
    assert got["generate/transformers"]["tokens_per_s"] == pytest.approx(100.0)
    assert got["generate/transformers"]["host_mb"] == {"fixed": 350.0, "per_b": 0}  # the largest max_rss
    assert got["generate/transformers"]["jobs"] == 3 and got["generate/transformers"]["source"] == "measured"
    # no table row: the overhead is the median time of the run's jobs without a model (the data card's 1.5 s)
    assert got["finetune/sft"]["overhead_s"] == 1.5
    assert got["finetune/sft"]["tokens_per_s"] == pytest.approx(4 * 16 * ROW / (10.0 - 1.5), abs=1e-3)
    assert got["data_card"]["seconds"] == 1.5
    # a run through the local job server: its max_rss is the launcher's, not fitted
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "jobserver.log").write_text("")
    rows, notes = calibration.calibrate(planner, jobs, [tmp_path / "benchmarks"], "test machine", "2026-01-01")
    assert "host_mb" not in {r["stage"]: r for r in rows}["data_card"] and "job server" in notes[0]
    # the fitted table round-trips through its file, and the plan then uses it
    calibration.write_table(rows, tmp_path / "fit.yaml", "test")
    assert cost.load_table(tmp_path / "fit.yaml") == rows
    est = cost.Planner(cfg, cost.load_table(tmp_path / "fit.yaml"), "cpu").estimate(gen[1])
    assert est.seconds == pytest.approx(2.0 + work / 100.0) and not est.unmeasured


def test_a_missing_throughput_file_stops_the_plan(tmp_path, monkeypatch):
    from tokensafe.config import ConfigError, check_config

    cfg = micro_config()
    cfg["plan"] = {"throughput": "results/plan/nothing.yaml"}
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="plan.throughput: results/plan/nothing.yaml: no such file"):
        check_config(cfg, data_checks=False)


def test_fit_rate_separates_overhead_when_work_varies():
    assert calibration.fit_rate([1000, 3000, 2000], [12.0, 32.0, 22.0], 0.0) == pytest.approx((2.0, 100.0))


def test_table_rows_name_their_source(tmp_path):
    for row in cost.load_table():
        assert row["source"] in ("measured", "unmeasured")
    bad = tmp_path / "t.yaml"
    bad.write_text("rows:\n- {stage: finetune, device: h100, tokens_per_s: 1, source: measured}\n")
    with pytest.raises(ValueError, match="machine and date"):
        cost.load_table(bad)
    bad.write_text("rows:\n- {stage: finetune, device: h100, tokens_per_s: 1, source: unmeasured}\n")
    with pytest.raises(ValueError, match="how it was derived"):
        cost.load_table(bad)


def test_resources_follow_the_estimate_and_user_values_win(tmp_path):
    cfg = micro_config()
    # one fine-tune's work (4 x 16 x 35 = 2240 tokens) takes an hour at this rate; 2000 MB of host memory
    (tmp_path / "fit.yaml").write_text(
        "rows:\n- {stage: finetune/sft, device: cpu, size: embedded, tokens_per_s: %r, overhead_s: 0, "
        "host_mb: {fixed: 2000, per_b: 0}, source: measured, machine: test, date: 2026-01-01}\n" % (2240 / 3600)
    )
    cfg["plan"] = {"throughput": str(tmp_path / "fit.yaml"), "margin": {"time_factor": 1.5, "mem_factor": 1.25}}
    counts, dry_jobs = dry_run(tmp_path, write_config(cfg, tmp_path))
    ft = [j for j in dry_jobs if j["rule"] == "finetune"]
    assert len(ft) == 2
    for j in ft:  # 1.5 x 60 minutes; 1.25 x 2000 MB
        assert (int(j["resources"]["runtime"]), int(j["resources"]["mem_mb"])) == (90, 2500)
    # a number in resources.<family> is asked as it is
    cfg = filled(cfg)
    cfg["resources"]["train"].update(runtime=33, mem_mb=1234)
    assert resources_for(cfg, "train", "finetune") == {"mem_mb": 1234, "runtime": 33, "gpu": 0}
    # auto: callables of the wildcards; the floor (10 minutes, 1000 MB) under a short estimate
    cfg = filled(micro_config())
    res = resources_for(cfg, "generate", "generate")
    assert callable(res["runtime"]) and callable(res["mem_mb"])
    fast = [
        {
            "stage": "generate/transformers",
            "device": "cpu",
            "size": "embedded",
            "tokens_per_s": 1e9,
            "host_mb": {"fixed": 10, "per_b": 0},
            "source": "unmeasured",
            "how": "test",
        }
    ]
    gen = next(j for j in plan_jobs(cfg) if j.rule == "generate")
    assert cost.resources_of(cost.Planner(cfg, fast, "cpu").estimate(gen), cfg) == {"runtime": 10, "mem_mb": 1000}


@pytest.mark.parametrize("config", ["config.yaml", *[str(p.relative_to(REPO)) for p in PRESETS]])
def test_presets_and_default_plan(config, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main([config]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "dominant:" in out
    if config != "config.yaml":  # GPU plans: every GPU row of the table is an estimate so far
        assert "planned for h100" in out and "UNMEASURED" in out and "fine-tunes" in out


def test_a_model_of_unknown_size_asks_for_the_fallback_and_the_plan_command_names_it(tmp_path, monkeypatch):
    """A local model folder without its config.json yet: the jobs' resources fall back (planning goes on), while
    `python -m tokensafe.plan` (strict) names the model."""
    folder = tmp_path / "my-aligned"
    folder.mkdir()
    cfg = filled(micro_config())
    cfg["models"]["aligned"] = str(folder)
    gen = next(j for j in plan_jobs(cfg) if j.rule == "generate")
    table = cost.load_table()
    with pytest.raises(ValueError, match="my-aligned.*size is unknown"):
        cost.Planner(cfg, table, "cpu").estimate(gen)
    assert cost.Planner(cfg, table, "cpu", strict=False).estimate(gen).row is None
    monkeypatch.chdir(tmp_path)
    assert cost.JobEstimator(cfg).resources("generate", {"run": "sft/p0.1/s1"}) is None
    res = resources_for(cfg, "generate", "generate")
    assert {k: res[k]({"run": "sft/p0.1/s1"}) for k in ("runtime", "mem_mb")} == {"runtime": 60, "mem_mb": 4000}
