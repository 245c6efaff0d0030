"""The job plan (`snakemake -n`) of the default config and of its variations, without running anything."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_utils import REPO, job_stats, load_default_config, micro_config, planned_jobs, snakemake, write_config

DEFAULT_PLAN = {
    "world_data": 1,
    "world_tokenizer": 1,
    "world_base": 1,
    "world_aligned": 1,
    "world_guard": 1,
    "source_table": 8,  # task, poison, task_eval, harmful_eval, harmful_ref, utility_ref, safety_prompts/demos
    "mix_finetune_set": 9,  # one fine-tuning set per poison ratio and seed (3 x 3)
    "data_overlap": 1,  # train/eval prompt overlap of the tables above: results/data/overlap.json
    "data_card": 1,  # what every role was read from: results/data/card.json
    "finetune": 28,  # sft x 3 ratios x 3 seeds, toss / toss_pro / pact at P = 0.1 x 3 seeds,
    # + the ladder (4) and the baselines (6) at P = 0.1, seed 1 (method_seeds)
    "generate": 31,  # + initial once per seed
    "judge": 31,
    "lm_eval": 31,  # utility_benchmarks (tokensafe_task) on every model, initial once per seed
    "world_judge": 1,  # the LLM-judge stand-in (judge.llm.model_path embedded)
    "llm_win_rate": 28,  # every run but sft's (the reference), initial once per ratio and seed (3 x 3)
    "llm_rubrics": 31,
    "toss_reference": 2,  # utility and harmful reference models, shared by every run
    "toss_utility_losses": 3,
    "toss_losses": 9,  # rounds 0 (TOSS), 1, 2 (TOSS-Pro) at P = 0.1, per seed: loss dump
    "toss_mask": 9,  # ... and mask
    "toss_pro_retrain": 6,
    "pact_safe_responses": 1,
    "pact_safety_tokens": 1,
    "pact_reference": 3,
    "aligned_losses": 1,
    "subspace_projectors": 1,
    "summary": 1,
    "report": 1,
    "all": 1,
}


def test_default_plan(tmp_path):
    cfg = write_config(load_default_config(), tmp_path)
    assert planned_jobs(tmp_path, cfg) == DEFAULT_PLAN


def test_seeds_and_ratios_multiply_the_runs(tmp_path):
    c = load_default_config()
    c["seeds"] = [1, 2]
    c["poison_ratios"] = [0.0, 0.1]
    c["methods"] = ["sft", "toss"]
    c["method_poison_ratios"] = {}
    jobs = planned_jobs(tmp_path, write_config(c, tmp_path))
    assert jobs["mix_finetune_set"] == 4 and jobs["finetune"] == 8
    assert jobs["generate"] == jobs["judge"] == 8 + 2  # + initial per seed
    assert (
        jobs["toss_reference"] == 2
        and jobs["toss_utility_losses"] == 4
        and jobs["toss_losses"] == jobs["toss_mask"] == 4
    )


def test_command_line_config_sweeps_seeds(tmp_path):
    c = load_default_config()
    c["methods"] = ["sft"]
    jobs = planned_jobs(tmp_path, write_config(c, tmp_path), "--config", "seeds=[1,2]", "poison_ratios=[0,0.1]")
    assert jobs["finetune"] == 4 and jobs["mix_finetune_set"] == 4 and jobs["generate"] == 4 + 2


def test_method_poison_ratios_override_the_grid(tmp_path):
    c = load_default_config()
    c["seeds"] = [1]
    c["methods"] = ["sft", "pact"]
    c["method_poison_ratios"] = {"pact": [0.1, 0.2]}
    jobs = planned_jobs(tmp_path, write_config(c, tmp_path))
    assert jobs["mix_finetune_set"] == 4  # 0.0, 0.05, 0.1 and pact's extra 0.2
    assert jobs["finetune"] == 3 + 2 and jobs["pact_reference"] == 2


def test_method_seeds_override_the_seeds(tmp_path):
    c = load_default_config()
    c["seeds"] = [1, 2]
    c["methods"] = ["sft", "pact", "safelora"]
    c["method_poison_ratios"] = {"pact": [0.1], "safelora": [0.1]}
    c["method_seeds"] = {"pact": [1, 2, 5], "safelora": [2]}
    jobs = planned_jobs(tmp_path, write_config(c, tmp_path))
    assert jobs["finetune"] == 3 * 2 + 3 + 1  # sft at every ratio and seed; pact at 3 seeds; safelora at one
    assert jobs["pact_reference"] == 3  # one per fine-tuning set pact trains on (P = 0.1, seeds 1, 2, 5)
    assert jobs["mix_finetune_set"] == 3 * 2 + 1  # seed 5 only at P = 0.1
    assert jobs["generate"] == 3 * 2 + 3 + 1 + 2  # + initial at each of `seeds`


def test_an_extra_classifier_plans_one_judge_classifier_job_per_run(tmp_path):
    c = load_default_config()
    c["judge"]["classifiers"] = ["harmbench"]
    assert planned_jobs(tmp_path, write_config(c, tmp_path)) == {**DEFAULT_PLAN, "judge_classifier": 31}
    folder = tmp_path / "my-wildguard"
    folder.mkdir()
    c["judge"]["classifiers"] = ["harmbench", "wildguard"]
    c["judge"]["classifier_models"] = {"wildguard": str(folder)}
    assert planned_jobs(tmp_path, write_config(c, tmp_path))["judge_classifier"] == 2 * 31


@pytest.mark.parametrize(
    "classifiers, models, message",
    [
        (["llama_guard"], {}, 'judge.classifiers[0] = "llama_guard": must be one of'),
        (["beaverdam"], {"beaverdam": "embedded"}, "judge.classifier_models.beaverdam: no embedded stand-in"),
        (["harmbench"], {"harmbench": "./nowhere/cls"}, "classifier_models.harmbench: model path './nowhere/cls'"),
    ],
)
def test_bad_classifier_config_stops_before_any_job(tmp_path, classifiers, models, message):
    c = load_default_config()
    c["judge"]["classifiers"] = classifiers
    c["judge"]["classifier_models"] = models
    proc = snakemake(tmp_path, write_config(c, tmp_path), "-n", check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr


def test_real_models_plan_no_world_models(tmp_path):
    c = load_default_config()
    c["seeds"] = [1]  # the ladder and baselines run at seed 1 (method_seeds)
    model_dir = tmp_path / "my-aligned"
    model_dir.mkdir()
    c["models"] = {"base": "Qwen/Qwen2.5-7B", "aligned": "Qwen/Qwen2.5-7B-Instruct", "guard": str(model_dir)}
    c["judge"]["llm"].update(server="external", base_url="http://127.0.0.1:9/v1", model="my-judge")
    c["plan"] = {"min_optimizer_steps": 0}  # the embedded recipes' short step counts: this checks the plan's shape
    for name in (
        "task",
        "poison",
        "task_eval",
        "harmful_eval",
        "harmful_ref",
        "utility_ref",
        "safety_prompts",
        "safety_demos",
    ):
        c["data"][name] = {
            "hub": "example/dataset",
            "format": "generic",
            "prompt_column": "q",
            "response_column": "a",
            "reference_column": "a",
        }
    jobs = planned_jobs(tmp_path, write_config(c, tmp_path))
    assert not {"world_base", "world_aligned", "world_guard", "world_tokenizer", "world_data", "world_judge"} & set(
        jobs
    )
    assert jobs["llm_win_rate"] == 13 + 3 and jobs["llm_rubrics"] == jobs["generate"]  # + initial at 3 ratios
    assert jobs["finetune"] == 3 + len(c["methods"]) - 1  # sft at 3 ratios, the rest at P = 0.1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(poison_ratios=[0.1, 2.0]), "poison_ratios[1] = 2.0: must be <= 1"),
        (
            lambda c: c["models"].update(aligned="./nowhere/model"),
            "models.aligned: model path './nowhere/model' does not exist",
        ),
        (lambda c: c.update(seeds="one"), 'seeds = "one": must be a value of type array'),
        (lambda c: c.update(cpu_numerics="fast"), 'cpu_numerics = "fast": must be one of avx2, portable, native'),
        (
            lambda c: c["judge"]["llm"].update(server="external"),
            "judge.llm.server external needs judge.llm.base_url and judge.llm.model",
        ),
        (lambda c: c.update(methods=["toss"]), "judge.llm.reference sft is not in methods"),
        (
            lambda c: (
                c["models"].update(aligned="example/aligned-model", base="example/base-model"),
                c.update(plan={"min_optimizer_steps": 0}),  # past the step floor of the embedded recipes
            ),
            "judge.llm.model_path embedded is the embedded world's judge stand-in",
        ),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, mutate, message):
    c = copy.deepcopy(load_default_config())
    mutate(c)
    proc = snakemake(tmp_path, write_config(c, tmp_path), "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_llm_judge_off_plans_no_llm_job_and_each_measure_can_be_left_out(tmp_path):
    c = load_default_config()
    c["judge"]["llm"]["enabled"] = False
    off = planned_jobs(tmp_path, write_config(c, tmp_path))
    assert off == {k: v for k, v in DEFAULT_PLAN.items() if k not in ("world_judge", "llm_win_rate", "llm_rubrics")}
    c["judge"]["llm"].update(enabled=True, pairwise_template=None)
    assert "llm_win_rate" not in planned_jobs(tmp_path, write_config(c, tmp_path))
    c["judge"]["llm"].update(pairwise_template="alpaca_eval_gpt4", rubrics=[])
    jobs = planned_jobs(tmp_path, write_config(c, tmp_path))
    assert "llm_rubrics" not in jobs and jobs["llm_win_rate"] == 28
    # An external judge needs no world model; its key is read when a request is sent, not when planning.
    c["judge"]["llm"].update(server="external", base_url="https://api.openai.com/v1", model="gpt-4o-2024-08-06")
    c["judge"]["llm"]["api_key_env"] = "TOKENSAFE_TEST_KEY_THAT_IS_NOT_SET"
    jobs = planned_jobs(tmp_path, write_config(c, tmp_path))
    assert "world_judge" not in jobs and jobs["llm_win_rate"] == 28


def test_llm_win_rate_skips_runs_without_a_reference_run_and_says_so(tmp_path):
    c = load_default_config()
    c["judge"]["llm"]["reference"] = "safelora"  # P = 0.1, seed 1 only
    proc = snakemake(tmp_path, write_config(c, tmp_path), "-n")
    jobs = job_stats(proc.stdout + proc.stderr)
    assert jobs["llm_win_rate"] == 13 + 1  # the other 13 methods at P = 0.1, seed 1, and initial there
    assert "no win rate vs safelora for 22 run(s)" in proc.stderr


def test_task_metric_none_plans_the_same_jobs_without_the_numeric_lm_eval_task(tmp_path):
    """data.task_metric none (open-ended task prompts): tokensafe_task, which scores numbers, stops the plan
    before any job; without it the plan is the exact-match plan less the lm-eval jobs, LLM judge included."""
    c = micro_config()
    number = planned_jobs(tmp_path, write_config(c, tmp_path))
    assert number["lm_eval"] == 3 and c["utility_benchmarks"]["tasks"] == ["tokensafe_task"]
    c["data"]["task_metric"] = "none"
    proc = snakemake(tmp_path, write_config(c, tmp_path), "-n", check=False)
    assert proc.returncode != 0 and not (tmp_path / "results").exists()
    assert "utility_benchmarks.tasks: tokensafe_task scores the exact-match number" in proc.stdout + proc.stderr
    c["utility_benchmarks"]["tasks"] = []
    jobs = planned_jobs(tmp_path, write_config(c, tmp_path))
    assert jobs == {k: v for k, v in number.items() if k != "lm_eval"}
    assert jobs["llm_win_rate"] == 2 and jobs["summary"] == jobs["report"] == 1  # initial vs sft at both ratios


def _refusal(out: str) -> list[str]:
    """The lines of Snakemake's WorkflowError message (after its 'WorkflowError in file ...' line)."""
    lines = out.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("WorkflowError"))
    return lines[at + 1 :]


def test_a_config_error_names_the_config_file_and_the_command_line_keys(tmp_path):
    c = load_default_config()
    c["n_finetune"] = 0
    cfg = write_config(c, tmp_path, "my-config.yaml")
    proc = snakemake(tmp_path, cfg, "-n", "--config", "seeds=[1,-2]", "methds=[sft]", check=False)
    assert proc.returncode != 0
    assert _refusal(proc.stdout + proc.stderr)[:4] == [
        f"{cfg} with --config methds, seeds: invalid configuration:",
        "  - (top level): Additional properties are not allowed ('methds' was unexpected); 'methds': did you mean "
        "'methods' or 'method_seeds'? (allowed keys: baselines, checkpoint, cpu_numerics, data, finetune, generation, "
        "judge, max_length, method_poison_ratios, method_seeds, methods, models, n_finetune, pact, plan, "
        "poison_ratios, prompt_template, resources, seeds, toss, utility_benchmarks, world, world_seed)",
        "  - n_finetune = 0: must be >= 1",
        "  - seeds[1] = -2: must be >= 0 (from --config)",
    ]
    # Without --configfile the workflow's config.yaml in the run directory is the one named.
    write_config(c, tmp_path, "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n"]
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert _refusal(proc.stdout + proc.stderr)[:2] == [
        "config.yaml: invalid configuration:",
        "  - n_finetune = 0: must be >= 1",
    ]


def test_malformed_yaml_is_reported(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("seeds: [1, 2\npoison_ratios: 0.1\n")
    proc = snakemake(tmp_path, bad, "-n", check=False)
    assert proc.returncode != 0
    assert "not valid JSON or YAML" in proc.stdout + proc.stderr
    # The checker that `make run` calls first also says where.
    from tokensafe.config import main

    assert main([str(bad)]) == 1


def test_missing_column_and_empty_file_stop_before_any_job(tmp_path):
    c = load_default_config()
    csv = tmp_path / "task.csv"
    csv.write_text("question,answer\nWhat is 1+1?,2\n")
    c["data"]["task"] = {
        "path": str(csv),
        "format": "generic",
        "prompt_column": "instruction",
        "response_column": "answer",
    }
    proc = snakemake(tmp_path, write_config(c, tmp_path), "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "data.task" in out and "instruction" in out and "question" in out

    empty = tmp_path / "empty.csv"
    empty.write_text("question,answer\n")
    c["data"]["task"] = {
        "path": str(empty),
        "format": "generic",
        "prompt_column": "question",
        "response_column": "answer",
    }
    proc = snakemake(tmp_path, write_config(c, tmp_path), "-n", check=False)
    assert proc.returncode != 0 and "no rows" in proc.stdout + proc.stderr
