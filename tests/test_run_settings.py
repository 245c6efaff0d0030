"""The settings, runs, resources and LLM-judge plan the rules are planned with (tokensafe.plan), on a small config
written out here, so every expected value is read off the config by hand."""

import copy

import pytest

from tokensafe.config import settings_hash
from tokensafe.plan import llm_judge_runs, runs, scheduling
from tokensafe.plan import run_settings as rs

AVX2 = "avx2 (ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2,STRICT)"
CFG = {
    "cpu_numerics": "avx2",
    "seeds": [1, 2],
    "poison_ratios": [0.0, 0.1],
    "methods": ["sft", "toss", "toss_pro", "pact", "pact_fullkl", "asft", "constrained_sft"],
    "method_poison_ratios": {"toss": [0.1], "pact": [0.1, 0.3]},
    "method_seeds": {"asft": [2]},
    "n_finetune": 60,
    "world_seed": 7,
    "models": {"base": "embedded", "aligned": "embedded", "guard": "hub:org/guard"},
    "data": {"task": "embedded", "poison": "embedded", "truncate_long_prompts": False, "allow_overlap": ["b", "a"]},
    "prompt_template": "chat",
    "max_length": 128,
    "finetune": {
        "lora": {"r": 8},
        "recipe": {"lr": 0.003, "batch_size": 16, "steps": 4},
        "method_recipes": {"toss": {"epochs": 2}},
    },
    "toss": {"d": 0.1, "selection": "global", "lora": {"r": 4}, "recipe": {"lr": 0.001}, "pro": {"rounds": 2, "k": 5}},
    "pact": {
        **{k: 1.0 for k in ("lambda", "tau_kl", "tau_g", "rho", "alpha", "bias", "t_c", "tau_d")},
        **{"n_prompts": 10, "response_tokens": 8, "filter_refusals": True, "k": 3, "token_select": "top", "weights": 1},
    },
    "baselines": {"asft": {"lambda": 1.0, "scaling": False}, "constrained_sft": {"beta": 0.1}},
    "generation": {
        "backend": "transformers",
        "max_new_tokens": 16,
        "batch_size": 4,
        "vllm": {"python": ".venv-vllm/bin/python", "engine": "shared", "max_model_len": 512},
    },
    "judge": {
        "keywords": ["no"],
        "guard": {"backend": "generation", "max_new_tokens": 4},
        "classifiers": ["harmbench"],
        "classifier_models": {},
        "classifier_batch_size": 8,
        "llm": {"enabled": True, "server": "transformers", "model_path": "embedded", "reference": "sft",
                "pairwise_template": "alpaca_eval_gpt4", "rubrics": ["hexphi"], "limit": 3},
    },
    "resources": {"train": {"threads": 2, "mem_mb": 8000, "gpus": 1}},
    "utility_benchmarks": {"tasks": ["tokensafe_task"], "backend": "hf"},
}  # fmt: skip


@pytest.fixture
def cfg():
    return copy.deepcopy(CFG)


def test_run_settings_of_sft(cfg):
    got = rs.run_settings(cfg, "sft", "0.1", "2")
    assert got == {
        "method": "sft",
        "poison_ratio": 0.1,
        "seed": 2,
        "n_finetune": 60,
        "models": {"base": "embedded", "aligned": "embedded"},
        "world_seed": 7,
        "data": {"task": "embedded", "poison": "embedded"},
        "prompt_template": "chat",
        "max_length": 128,
        "lora": {"r": 8},
        "recipe": {"lr": 0.003, "batch_size": 16, "steps": 4},
        "dtype": "auto",
        "cpu_numerics": AVX2,
        "method_settings": {},
    }
    # Snakemake compares params by repr: the key order is part of what a finished run recorded.
    assert list(got) == ["method", "poison_ratio", "seed", "n_finetune", "models", "world_seed", "data",
                         "prompt_template", "max_length", "lora", "recipe", "dtype", "cpu_numerics",
                         "method_settings"]  # fmt: skip


def test_run_settings_of_toss_differ_from_sft_by_recipe_and_method_settings(cfg):
    sft, toss = rs.run_settings(cfg, "sft", "0.1", "1"), rs.run_settings(cfg, "toss", "0.1", "1")
    assert toss["recipe"] == {"lr": 0.003, "batch_size": 16, "epochs": 2}  # epochs replaces steps
    # toss.chunk_size is absent here: the loss dumps' default, 1024.
    assert toss["method_settings"] == {
        "d": 0.1, "selection": "global", "lora": {"r": 4}, "recipe": {"lr": 0.001}, "chunk_size": 1024,
    }  # fmt: skip
    assert {k for k in sft if sft[k] != toss[k]} == {"method", "recipe", "method_settings"}
    assert settings_hash(sft) != settings_hash(toss)
    pro = rs.run_settings(cfg, "toss_pro", "0.1", "1")["method_settings"]
    assert pro == {**toss["method_settings"], "rounds": 2, "k": 5}


def test_method_settings_by_section_and_by_rung(cfg):
    assert rs.run_settings(cfg, "asft", "0.1", "2")["method_settings"] == {"lambda": 1.0, "scaling": False}
    assert rs.run_settings(cfg, "pact_fullkl", "0.1", "1")["method_settings"] == {"lambda": 1.0, "tau_kl": 1.0}
    assert list(rs.run_settings(cfg, "pact", "0.1", "1")["method_settings"]) == [
        "lambda", "tau_kl", "tau_g", "rho", "alpha", "bias", "t_c", "tau_d",
    ]  # fmt: skip
    # A change to another method's section leaves a run's settings alone.
    before = settings_hash(rs.run_settings(cfg, "asft", "0.1", "2"))
    cfg["baselines"]["constrained_sft"]["beta"] = 0.5
    cfg["toss"]["d"] = 0.2
    assert settings_hash(rs.run_settings(cfg, "asft", "0.1", "2")) == before


def test_real_models_drop_the_world_seed(cfg):
    cfg["models"].update(base="org/base", aligned="org/aligned")
    assert rs.run_settings(cfg, "sft", "0.0", "1")["world_seed"] is None
    assert rs.initial_settings(cfg, "1")["world_seed"] is None


def test_stage_settings_keep_what_defines_the_aligned_model(cfg):
    assert rs.stage_settings(cfg, {"x": 1}) == {
        "models": {"base": "embedded", "aligned": "embedded"},
        "world_seed": 7,
        "prompt_template": "chat",
        "max_length": 128,
        "dtype": "auto",
        "cpu_numerics": AVX2,
        "method_settings": {"x": 1},
    }
    assert rs.toss_reference_settings(cfg)["method_settings"] == {"lora": {"r": 4}, "recipe": {"lr": 0.001}}
    assert rs.toss_reference_settings(cfg)["seed"] == 0
    assert rs.aligned_loss_settings(cfg)["method_settings"] == {"chunk_size": 1024}
    cfg["toss"]["chunk_size"] = 512  # (the schema fills it in; the loss dumps read it as it is)
    assert rs.toss_losses_settings(cfg)["method_settings"] == {"chunk_size": 512}
    assert rs.aligned_loss_settings(cfg)["method_settings"] == {"chunk_size": 512}
    assert rs.pact_stage_settings(cfg, ("k", "weights"))["method_settings"] == {"k": 3, "weights": 1}


def test_evaluation_settings_of_a_run_path(cfg):
    assert rs.parse_run("sft/p0.1/s2") == ("sft", "0.1", "2")
    assert rs.parse_run("initial/s1") == ("initial", None, "1")
    assert rs.generation_settings(cfg, "toss/p0.1/s1") == rs.run_settings(cfg, "toss", "0.1", "1")
    assert rs.generation_settings(cfg, "initial/s2") == {
        "method": "initial",
        "seed": 2,
        "models": {"aligned": "embedded"},
        "world_seed": 7,
        "prompt_template": "chat",
        "dtype": "auto",
        "cpu_numerics": AVX2,
    }


def test_task_max_new_tokens_falls_back_to_max_new_tokens():
    assert rs.task_max_new_tokens({"max_new_tokens": 16}) == 16
    assert rs.task_max_new_tokens({"max_new_tokens": 16, "task_max_new_tokens": 5}) == 5


def test_overlap_settings_carry_the_budgets_only_when_prompts_are_cut(cfg):
    assert rs.overlap_settings(cfg, ["task"]) == {"data": {"task": "embedded", "allow_overlap": ["a", "b"]}}
    cfg["data"]["truncate_long_prompts"] = True
    out = rs.overlap_settings(cfg, ["task"])
    assert out["generation"] == {"backend": "transformers", "max_new_tokens": 16, "task_max_new_tokens": 16, "vllm": {}}
    assert out["data"]["truncate_long_prompts"] is True and out["prompt_template"] == "chat"
    cfg["generation"].update(backend="vllm", task_max_new_tokens=3)
    out = rs.overlap_settings(cfg, ["task"])["generation"]
    assert out["task_max_new_tokens"] == 3 and out["vllm"] == {"max_model_len": 512}


def test_generation_and_judge_params_read_their_own_keys(cfg):
    assert rs.generation_params(cfg) == {"backend": "transformers", "max_new_tokens": 16, "batch_size": 4}
    cfg["generation"]["backend"] = "vllm"
    assert rs.generation_params(cfg)["vllm"] == {"max_model_len": 512}  # not the interpreter nor the engine mode
    assert rs.judge_backend(cfg) == "vllm"  # judge.guard.backend: generation follows generation.backend
    cfg["judge"]["guard"]["backend"] = "transformers"
    assert rs.judge_backend(cfg) == "transformers"
    assert rs.judge_params(cfg) == {"keywords": ["no"], "guard": {"max_new_tokens": 4}}
    assert rs.bench_params(cfg) == {"tasks": ["tokensafe_task"], "backend": "hf"}
    assert rs.benchmark_backend({}) == "hf"


def test_the_run_grid(cfg):
    assert runs.method_ratios(cfg, "sft") == ["0.0", "0.1"] and runs.method_ratios(cfg, "pact") == ["0.1", "0.3"]
    assert runs.method_seeds(cfg, "asft") == [2] and runs.method_seeds(cfg, "sft") == [1, 2]
    assert runs.ratios(cfg) == ["0.0", "0.1", "0.3"]
    grid = runs.all_runs(cfg)
    # initial: 3 ratios x 2 seeds; sft 2 x 2, toss 1 x 2, toss_pro 2 x 2, pact 2 x 2, pact_fullkl 2 x 2, asft 2 x 1,
    # constrained_sft 2 x 2
    assert len(grid) == 6 + 4 + 2 + 4 + 4 + 4 + 2 + 4
    assert grid[0] == {"method": "initial", "poison_ratio": 0.0, "seed": 1, "run": "initial/s1"}
    assert {"method": "pact", "poison_ratio": 0.3, "seed": 2, "run": "pact/p0.3/s2"} in grid


def test_finetune_inputs_come_from_the_registry(cfg):
    base = {"data": "results/data/finetune/p0.1/s2.parquet", "aligned": ["results/world/aligned"]}
    assert runs.finetune_inputs(cfg, "sft", "0.1", "2") == base
    assert runs.finetune_inputs(cfg, "toss_pro", "0.1", "2") == {
        **base,
        "mask": "results/toss/p0.1/s2/round2/mask.parquet",  # the last of toss.pro.rounds
    }
    assert runs.finetune_inputs(cfg, "pact_fullkl", "0.1", "2") == base  # no safety tokens on this rung
    assert runs.finetune_inputs(cfg, "pact", "0.1", "2")["reference"] == "results/pact/p0.1/s2/reference.safetensors"
    assert runs.finetune_inputs(cfg, "constrained_sft", "0.1", "2")["reference_losses"] == (
        "results/baselines/p0.1/s2/aligned_losses.parquet"
    )


def test_model_references_and_their_tracked_files(cfg):
    assert runs.model_ref(cfg, "aligned") == "results/world/aligned" and runs.model_ref(cfg, "guard") == "hub:org/guard"
    assert runs.model_input(cfg, "aligned") == ["results/world/aligned"] and runs.model_input(cfg, "guard") == []
    assert runs.source_input(cfg, "task") == ["results/world/data/task_train.parquet"]
    cfg["data"]["task"] = {"format": "gsm8k", "path": "data/gsm8k.jsonl"}
    assert runs.source_input(cfg, "task") == ["data/gsm8k.jsonl"]


def test_report_inputs(cfg):
    # toss at 0.1 (round 0), toss_pro at 0.0 and 0.1 (rounds 0-2), by ratio, seed and round
    assert runs.toss_report_inputs(cfg) == [
        f"results/toss/p{r}/s{s}/round{t}/mask.json" for r in ("0.0", "0.1") for s in (1, 2) for t in (0, 1, 2)
    ]
    assert runs.pact_report_inputs(cfg) == ["results/pact/safety_tokens.parquet"]
    assert runs.pact_conflict_inputs(cfg) == [f"results/pact/p{r}/s{s}/weight_conflicts.json"
                                              for r in ("0.1", "0.3") for s in (1, 2)]  # fmt: skip
    cfg["methods"] = ["sft", "pact_fullkl"]
    assert (
        runs.pact_report_inputs(cfg) == []
        and runs.pact_conflict_inputs(cfg) == []
        and runs.toss_report_inputs(cfg) == []
    )
    assert runs.classifier_outputs(cfg, "sft/p0.1/s1") == ["results/runs/sft/p0.1/s1/classifiers/harmbench.parquet"]
    # one per run: initial per ratio and seed (2 x 2, its path names the seed only), sft and pact_fullkl 2 x 2 each
    assert len(runs.lm_eval_outputs(cfg)) == 12 and len(set(runs.lm_eval_outputs(cfg))) == 10
    cfg["utility_benchmarks"] = None
    assert runs.lm_eval_outputs(cfg) == []


def test_resources_per_family(cfg):
    assert scheduling.resources_for(cfg, "train") == {"mem_mb": 8000, "runtime": 60, "gpu": 1}
    assert scheduling.resources_for(cfg, "report") == {"mem_mb": 4000, "runtime": 60, "gpu": 0}
    assert scheduling.threads_for(cfg, "train") == 2 and scheduling.threads_for(cfg, "data") == 1


RUN_ORDER = ["initial/s1", "initial/s2", "initial/s1", "sft/p0.1/s1", "sft/p0.1/s2", "toss/p0.1/s1", "toss/p0.1/s2"]


def test_one_evaluation_group_per_run_by_default():
    groups = scheduling.evaluation_groups(RUN_ORDER, "sft", 1)
    assert groups == {
        "sft/p0.1/s1": "eval_sft-p0.1-s1",
        "sft/p0.1/s2": "eval_sft-p0.1-s2",
        "initial/s1": "eval_initial-s1",  # initial appears once per ratio: one group
        "initial/s2": "eval_initial-s2",
        "toss/p0.1/s1": "eval_toss-p0.1-s1",
        "toss/p0.1/s2": "eval_toss-p0.1-s2",
    }


def test_packed_groups_keep_the_reference_runs_apart():
    # 3 runs a group: the two sft runs (the win rates' reference) alone; initial s1, s2 and toss s1; then toss s2.
    groups = scheduling.evaluation_groups(RUN_ORDER, "sft", 3)
    assert groups == {
        "sft/p0.1/s1": "eval_sft-p0.1-s1",
        "sft/p0.1/s2": "eval_sft-p0.1-s1",
        "initial/s1": "eval_initial-s1",
        "initial/s2": "eval_initial-s1",
        "toss/p0.1/s1": "eval_initial-s1",
        "toss/p0.1/s2": "eval_toss-p0.1-s2",
    }


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda c: c["judge"]["llm"].update(server="external"), "judge.llm.server external needs judge.llm.base_url"),
        (lambda c: c.update(methods=["toss"]), "judge.llm.reference sft is not in methods ['toss']"),
        (lambda c: c["models"].update(aligned="org/aligned"), "judge.llm.model_path embedded is the embedded world's"),
        (lambda c: c["judge"]["llm"].update(pairwise_template=None, reference="dpo"), None),  # no win rate asked
    ],
)
def test_llm_judge_config_problems(cfg, change, problem):
    assert llm_judge_runs.config_problem(cfg) is None
    change(cfg)
    got = llm_judge_runs.config_problem(cfg)
    assert got is None if problem is None else got.startswith(problem)


def test_llm_judge_paths_skip_cells_without_a_reference_run(cfg):
    # sft (the reference) runs at 0.0 and 0.1 only: pact's runs at 0.3 get no win rate.
    paths = llm_judge_runs.llm_paths(cfg, {"method": "pact", "poison_ratio": 0.3, "seed": 1, "run": "pact/p0.3/s1"})
    assert paths == {"llm_win_rate": None, "llm_rubrics": "results/runs/pact/p0.3/s1/llm_rubrics.parquet",
                     "llm_win_rate_skipped": True}  # fmt: skip
    sft = llm_judge_runs.llm_paths(cfg, {"method": "sft", "poison_ratio": 0.1, "seed": 1, "run": "sft/p0.1/s1"})
    assert sft["llm_win_rate"] is None and "llm_win_rate_skipped" not in sft  # the reference gets none
    assert "results/runs/initial/s1/llm_win_rate/p0.3.parquet" not in llm_judge_runs.llm_outputs(cfg, "llm_win_rate")
    assert "results/runs/initial/s1/llm_win_rate/p0.1.parquet" in llm_judge_runs.llm_outputs(cfg, "llm_win_rate")
    notice = llm_judge_runs.skipped_notice(cfg)
    assert notice.startswith("judge.llm: no win rate vs sft for 4 run(s)")  # pact at 0.3 x 2 seeds, initial at 0.3
    assert llm_judge_runs.judge_model(cfg) == "results/world/judge" and llm_judge_runs.judge_input(cfg) == [
        "results/world/judge"
    ]
    assert llm_judge_runs.win_rate_params(cfg).get("rubrics") is None
    assert "pairwise_template" not in llm_judge_runs.rubric_params(cfg)
