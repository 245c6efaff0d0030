"""Each training stage's optimiser steps, computed before any job (tokensafe.plan.training), against the official
scripts' numbers, and the floor that refuses a stage too short to move an adapter."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tokensafe.config import ConfigError, check_config, main
from tokensafe.plan.training import format_table, step_problems, training_stages

from workflow_utils import REPO, load_default_config

PRESETS = REPO / "config" / "presets"

# The official numbers, each from its source:
# - Polly-LYP/TOSS scripts/train_safety_model.sh and train_utility_model.sh: --max_samples 22400,
#   --train_batch_size 64, --max_epochs 2 -> 22,400 / 64 x 2 = 700 steps per reference model.
# - Polly-LYP/TOSS scripts/selective_finetuning.sh: --max_samples 112000, --train_batch_size 64, --max_epochs 2
#   -> 112,000 / 64 x 2 = 3,500 steps.
# - PACT paper (docs/methods.md §2.7): 5,000 samples, batch 2, 3 epochs -> 2,500 x 3 = 7,500 steps.
TOSS_REFERENCE_STEPS = 22_400 // 64 * 2
TOSS_FINETUNE_STEPS = 112_000 // 64 * 2
PACT_FINETUNE_STEPS = 5_000 // 2 * 3
assert (TOSS_REFERENCE_STEPS, TOSS_FINETUNE_STEPS, PACT_FINETUNE_STEPS) == (700, 3_500, 7_500)

# Rows of the reference sets as the data command writes them for the TOSS paper preset (the scripts' cap).
TOSS_ROWS = {"harmful_ref": 22_400, "utility_ref": 22_400, "safety_demos": 2_000}


def preset(name: str) -> dict:
    return yaml.safe_load((PRESETS / f"{name}.yaml").read_text())


def steps(cfg: dict, rows: dict) -> dict[str, int]:
    return {s.stage: s.steps for s in training_stages(cfg, rows)}


def test_toss_paper_preset_trains_as_the_official_scripts():
    got = steps(preset("toss-llama3-8b"), TOSS_ROWS)
    assert got["toss_reference harmful"] == got["toss_reference utility"] == TOSS_REFERENCE_STEPS
    for method in ("sft", "toss", "toss_pro", "random_mask", "prefix_mask"):
        assert got[f"finetune {method}"] == TOSS_FINETUNE_STEPS, method
    # safety_mix adds its 2,000 demonstrations: ceil(114,000 / 64) x 2
    assert got["finetune safety_mix"] == 1_782 * 2
    # TOSS-Pro round t retrains on D^h plus k = 11,200 picks per round so far (unpublished; docs/methods.md A9)
    assert got["toss_pro_retrain round 1"] == 33_600 // 64 * 2 == 1_050
    assert got["toss_pro_retrain round 2"] == 44_800 // 64 * 2 == 1_400


def test_pact_preset_trains_as_the_paper():
    cfg = preset("pact-qwen2.5-7b")
    got = steps(cfg, {})
    assert {k for k in got} == {f"finetune {m}" for m in cfg["methods"]}
    assert set(got.values()) == {PACT_FINETUNE_STEPS}


def test_gsm8k_grid_preset_states_its_scaled_steps():
    """The scaled grid's header states these counts; they must stay what the recipe computes."""
    got = steps(preset("toss-llama3-8b-gsm8k"), {"harmful_ref": 1_000, "utility_ref": 1_000, "safety_demos": 2_000})
    assert got["finetune sft"] == 313 * 3 == 939
    assert got["toss_reference harmful"] == got["toss_reference utility"] == 63 * 3 == 189
    assert (got["toss_pro_retrain round 1"], got["toss_pro_retrain round 2"]) == (94 * 3, 125 * 3) == (282, 375)
    assert got["finetune safety_mix"] == 322 * 3 == 966
    header = (PRESETS / "toss-llama3-8b-gsm8k.yaml").read_text()
    for n in ("939 steps", "189 steps", "282 / 375 steps", "966 steps"):
        assert n in header


def test_steps_follow_the_training_loop():
    """ceil(epochs x ceil(rows / (batch x grad_accum))), as TrainSettings.total_steps; explicit steps win."""
    from tokensafe.train.loop import TrainSettings

    cfg = preset("toss-llama3-8b-gsm8k")
    cfg["n_finetune"] = 1_001
    cfg["finetune"]["recipe"].update(batch_size=5, grad_accum=2, epochs=1.5)
    got = steps(cfg, {"harmful_ref": 10, "utility_ref": 10})["finetune sft"]
    assert got == 152 == TrainSettings(lr=1e-4, batch_size=5, grad_accum=2, epochs=1.5).total_steps(1_001)
    cfg["finetune"]["method_recipes"] = {"sft": {"steps": 7}}
    assert steps(cfg, {"harmful_ref": 10, "utility_ref": 10})["finetune sft"] == 7


def test_short_reference_models_are_refused_naming_the_stage():
    """The old TOSS preset's references: 500 rows, batch 64, 2 epochs = 16 steps."""
    cfg = preset("toss-llama3-8b")
    problems = step_problems(cfg, {**TOSS_ROWS, "harmful_ref": 500})
    assert len(problems) == 1
    assert problems[0].startswith("toss_reference harmful: 16 optimiser steps (500 rows x 2 epochs / batch 64")
    assert "plan.min_optimizer_steps = 100" in problems[0] and "toss.recipe.epochs" in problems[0]
    assert "data.harmful_ref" in problems[0]
    # a lower floor lets it through: the user decides
    cfg["plan"] = {"min_optimizer_steps": 16}
    assert step_problems(cfg, {**TOSS_ROWS, "harmful_ref": 500}) == []


def test_short_finetune_is_refused_with_the_recipe_key():
    cfg = preset("pact-qwen2.5-7b")
    cfg["finetune"]["method_recipes"] = {"asft": {"steps": 40}}
    (problem,) = step_problems(cfg, {})
    assert problem.startswith("finetune asft: 40 optimiser steps (finetune.method_recipes.asft.steps = 40)")
    assert "raise finetune.method_recipes.asft.steps" in problem


def test_embedded_world_is_exempt():
    cfg = load_default_config()
    assert step_problems(cfg, {}) == []
    stages = training_stages(cfg, {})
    assert {s.stage for s in stages if not s.checked} >= {"world_pretrain", "toss_reference harmful", "finetune sft"}
    assert all(not s.checked for s in stages)


def test_check_config_stops_before_any_job(tmp_path, monkeypatch):
    """The floor is part of the config check the Snakefile runs before planning."""
    cfg = copy.deepcopy(preset("toss-llama3-8b-gsm8k"))
    monkeypatch.chdir(tmp_path)
    for role in ("task", "task_eval", "poison", "harmful_eval", "harmful_ref", "utility_ref", "safety_demos"):
        cfg["data"][role] = "embedded"
    cfg["data"]["harmful_ref"] = {"path": "href.jsonl", "format": "generic"}
    Path("href.jsonl").write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(300)))
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    # 300 rows / batch 16 x 3 epochs = 19 x 3 = 57 steps; rounds add k = 500 picks each
    assert "toss_reference harmful: 57 optimiser steps (300 rows x 3 epochs / batch 16" in str(e.value)
    assert "toss_reference utility" in str(e.value)  # the embedded D^u has 200 rows: 39 steps


def test_config_command_prints_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["config.yaml"]) == 0
    out = capsys.readouterr().out
    assert "Training stages (optimiser steps per job)" in out
    assert "toss_reference harmful" in out and "finetune sft" in out
    table = format_table(load_default_config(), {})
    assert table in out and "plan.min_optimizer_steps = 100" in table


def test_toss_paper_preset_header_states_its_steps():
    header = (PRESETS / "toss-llama3-8b.yaml").read_text()
    for n in ("700 steps each", "1,050 / 1,400 steps", "3,500 steps", "3,564 steps"):
        assert n in header
