"""Settings that could only give a meaningless score stop at planning (tokensafe.plan.scoring), each with the key,
the file and an example row."""

import copy

import pytest

from tokensafe.config import ConfigError, check_config
from tokensafe.data.sources import load_configured_source
from tokensafe.eval.utility.answers import can_match
from tokensafe.plan.scoring import embedded_model_problems, metric_problems

from workflow_utils import REPO, load_default_config

GSM8K_TEST = REPO / "tests" / "data" / "public" / "gsm8k_test_head60.jsonl"
SST2_DEV = "sentence\tlabel\nunflinchingly bleak and desperate \t0\nit 's a charming journey . \t1\n"


@pytest.fixture
def sst2_dev(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text(SST2_DEV)
    return path


def _problems(data_cfg: dict) -> list[str]:
    table = load_configured_source("task_eval", data_cfg["task_eval"], None)
    return metric_problems(data_cfg, table)


def test_references_each_metric_can_match():
    assert can_match("18", "number") and can_match("$1,000", "number") and can_match("7.", "number")
    assert not can_match("negative", "number") and not can_match("18 dollars", "number")
    assert can_match("positive", "sst2") and can_match("Positive.", "sst2") and not can_match("1", "sst2")
    assert can_match("Sci/Tech", "agnews") and not can_match("positive", "agnews")


def test_sst2_labels_scored_as_numbers_are_refused_with_file_and_row(sst2_dev):
    data = {"task_eval": {"path": str(sst2_dev), "format": "sst2"}, "task_metric": "number"}
    assert _problems(data) == [
        f"data.task_metric = number: 2 of 2 references of data.task_eval ({sst2_dev}) are not numbers, so those "
        "answers always score 0 (e.g. row 0: reference 'negative'); set data.task_metric: sst2"
    ]
    assert _problems({**data, "task_metric": "sst2"}) == []
    [p] = _problems({**data, "task_metric": "agnews"})  # SST-2 labels are no AG News labels either
    assert "are not agnews labels (World, Sports, Business, Sci/Tech)" in p and p.endswith("task_metric: sst2")


def test_numbers_scored_as_labels_are_refused(sst2_dev):
    data = {"task_eval": {"path": str(GSM8K_TEST), "format": "gsm8k"}, "task_metric": "sst2"}
    [p] = _problems(data)
    assert p.startswith(f"data.task_metric = sst2: 60 of 60 references of data.task_eval ({GSM8K_TEST}) are not ")
    assert "sst2 labels (negative, positive)" in p and "(e.g. row 0: reference '18')" in p
    assert p.endswith("set data.task_metric: number")
    assert _problems({**data, "task_metric": "number"}) == []


def test_the_embedded_task_set_has_numeric_answers():
    assert metric_problems({"task_eval": "embedded", "task_metric": "number"}, None) == []
    [p] = metric_problems({"task_eval": "embedded", "task_metric": "agnews"}, None)
    assert p == (
        "data.task_metric = agnews: data.task_eval embedded holds the embedded world's numeric answers; "
        "set data.task_metric: number"
    )


def test_a_metric_without_exact_match_and_a_hub_set_have_nothing_to_check(sst2_dev):
    table = load_configured_source("task_eval", {"path": str(sst2_dev), "format": "sst2"}, None)
    assert metric_problems({"task_eval": {"path": str(sst2_dev)}, "task_metric": "none"}, table) == []
    assert metric_problems({"task_eval": {"hub": "glue"}, "task_metric": "number"}, None) == []


def test_embedded_models_on_real_data_need_the_acknowledgement():
    cfg = load_default_config()
    assert embedded_model_problems(cfg) == []  # the embedded world throughout
    cfg["data"]["task"] = {"path": "gsm8k/train.jsonl", "format": "gsm8k"}
    cfg["data"]["harmful_eval"] = {"hub": "walledai/AdvBench", "format": "advbench"}
    [p] = embedded_model_problems(cfg)
    assert p.startswith("data.task, data.harmful_eval: real data with models.aligned embedded: the embedded models ")
    assert "task accuracy is 0 and their answers are babble" in p
    assert "or set models.embedded_on_real_data: true" in p
    cfg["models"]["embedded_on_real_data"] = True
    assert embedded_model_problems(cfg) == []
    real = copy.deepcopy(cfg)
    real["models"].update(base="Qwen/Qwen2.5-7B", aligned="Qwen/Qwen2.5-7B-Instruct", embedded_on_real_data=False)
    assert embedded_model_problems(real) == []


def test_check_config_refuses_both_before_any_job(tmp_path, monkeypatch, sst2_dev):
    cfg = load_default_config()
    cfg["data"]["task_eval"] = {"path": str(sst2_dev), "format": "sst2"}
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert "data.task_metric = number: 2 of 2 references" in str(err.value)
    assert "data.task_eval: real data with models.aligned embedded" in str(err.value)
    cfg["data"]["task_metric"] = "sst2"
    cfg["utility_benchmarks"]["tasks"] = []
    cfg["models"]["embedded_on_real_data"] = True
    monkeypatch.chdir(tmp_path)
    check_config(cfg)
