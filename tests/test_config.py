"""Config validation: every bad value is reported with its key, its value and what is allowed."""

import copy
import json
import re

import pytest
import yaml

from tokensafe.config import ConfigError, check_config, classify_model_ref, method_recipe, ratio_tag, settings_hash


@pytest.fixture
def config(repo_root):
    return yaml.safe_load((repo_root / "config.yaml").read_text())


def test_default_config_is_valid(config):
    check_config(config)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c.update(poison_ratios=[0.0, 1.5]), "poison_ratios[1] = 1.5: must be <= 1"),
        (lambda c: c.update(poison_ratios=[-0.1]), "poison_ratios[0] = -0.1: must be >= 0"),
        (lambda c: c.update(methods=["sft", "magic"]), 'methods[1] = "magic": must be one of'),
        (lambda c: c.update(n_finetune="many"), 'n_finetune = "many": must be a value of type integer'),
        (
            lambda c: c["generation"].update(backend="tgi"),
            'generation.backend = "tgi": must be one of transformers, vllm',
        ),
        (lambda c: c.pop("seeds"), "'seeds' is a required property"),
        (lambda c: c.update(colour="blue"), "colour"),
        (lambda c: c["finetune"]["lora"].update(r=0), "finetune.lora.r = 0: must be >= 1"),
        (lambda c: c["finetune"].update(method_recipes={"magic": {"lr": 1e-4}}), "finetune.method_recipes"),
        (
            lambda c: c["finetune"].update(method_recipes={"pact": {"lr": -1}}),
            "finetune.method_recipes.pact.lr = -1: must be > 0",
        ),
        (
            lambda c: c["finetune"].update(method_recipes={"pact": {"batch": 2}}),
            "finetune.method_recipes.pact: Additional properties",
        ),
        (
            lambda c: c["finetune"].update(method_recipes={"pact": {}}),
            "finetune.method_recipes.pact = {}: must be a mapping with at least 1 key",
        ),
        (
            lambda c: c["finetune"].update(method_recipes={"pact": {"schedule": "linear"}}),
            'finetune.method_recipes.pact.schedule = "linear": must be one of constant, cosine, step_per_epoch',
        ),
    ],
)
def test_schema_errors_name_key_value_and_allowed(config, mutate, expected):
    bad = copy.deepcopy(config)
    mutate(bad)
    with pytest.raises(ConfigError) as err:
        check_config(bad)
    assert expected in str(err.value)


def test_missing_model_path_is_an_error(config, tmp_path):
    bad = copy.deepcopy(config)
    bad["models"]["guard"] = str(tmp_path / "no-such-guard")
    with pytest.raises(ConfigError, match=r"models.guard: model path .*no-such-guard.* does not exist"):
        check_config(bad)


def test_model_reference_kinds(tmp_path):
    assert classify_model_ref("embedded") == "embedded"
    assert classify_model_ref("meta-llama/Llama-Guard-3-8B") == "hub"
    assert classify_model_ref(str(tmp_path)) == "local"
    with pytest.raises(ConfigError):
        classify_model_ref("./models/missing")


def test_embedded_pool_too_small_for_the_mix(config):
    bad = copy.deepcopy(config)
    bad["n_finetune"] = 5000
    with pytest.raises(ConfigError, match="task pool"):
        check_config(bad)


def test_settings_hash_ignores_key_order_and_sees_values():
    a = {"x": 1, "y": {"z": [1, 2]}}
    b = {"y": {"z": [1, 2]}, "x": 1}
    assert settings_hash(a) == settings_hash(b)
    assert settings_hash(a) != settings_hash({"x": 2, "y": {"z": [1, 2]}})


def test_ratio_tag():
    assert [ratio_tag(p) for p in (0, 0.05, 0.1, 1)] == ["0.0", "0.05", "0.1", "1.0"]


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    from tokensafe.config import load_config_file, main

    bad = tmp_path / "config.yaml"
    bad.write_text("seeds: [1]\nmethods: [sft\npoison_ratios: [0.1]\n")
    with pytest.raises(ConfigError, match=r"config.yaml:3:\d+: not valid YAML"):
        load_config_file(bad)
    assert main([str(bad)]) == 1
    assert "not valid YAML" in capsys.readouterr().err


def test_checker_accepts_the_default(repo_root, capsys):
    from tokensafe.config import main

    assert main([str(repo_root / "config.yaml")]) == 0
    assert "OK" in capsys.readouterr().out


def test_command_line_strings_become_the_types_the_schema_asks_for():
    from tokensafe.config import coerce_command_line_values

    # What `snakemake --config seeds=[1,2] poison_ratios=[0,0.1] ...` hands over (YAML BaseLoader: all strings).
    cfg = {
        "seeds": ["1", "2"],
        "poison_ratios": ["0", "0.1"],
        "n_finetune": "40",
        "methods": ["sft"],
        "finetune": {"recipe": {"lr": "3e-3", "steps": "ten"}},
        "pact": {"filter_refusals": "false"},
        "generation": {"max_new_tokens": 7},
    }
    out = coerce_command_line_values(cfg)
    assert out is cfg
    assert cfg["seeds"] == [1, 2] and cfg["poison_ratios"] == [0.0, 0.1] and cfg["n_finetune"] == 40
    assert cfg["finetune"]["recipe"] == {"lr": 0.003, "steps": "ten"}  # not a number: left for validation to report
    assert cfg["pact"]["filter_refusals"] is False and cfg["methods"] == ["sft"]
    assert cfg["generation"]["max_new_tokens"] == 7


def test_method_recipe_overrides_keys_and_swaps_the_run_length():
    finetune = {
        "recipe": {"lr": 3e-3, "batch_size": 32, "steps": 70, "schedule": "constant"},
        "method_recipes": {"pact": {"lr": 1e-4, "epochs": 3, "schedule": "step_per_epoch"}, "asft": {"batch_size": 8}},
    }
    assert method_recipe(finetune, "pact") == {"lr": 1e-4, "batch_size": 32, "epochs": 3, "schedule": "step_per_epoch"}
    assert method_recipe(finetune, "asft") == {"lr": 3e-3, "batch_size": 8, "steps": 70, "schedule": "constant"}
    assert method_recipe(finetune, "sft") == finetune["recipe"]
    assert method_recipe({"recipe": finetune["recipe"]}, "pact") == finetune["recipe"]  # no method_recipes at all


def test_a_valid_method_recipe_passes(config):
    ok = copy.deepcopy(config)
    ok["finetune"]["method_recipes"] = {
        "pact": {"lr": 1e-4, "epochs": 3, "schedule": "step_per_epoch", "batch_size": 2}
    }
    check_config(ok)


# ---------------------------------------------------------------------------- model paths and hub ids


def test_a_missing_local_looking_model_is_refused_with_the_hub_marker(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    bad = copy.deepcopy(config)
    bad["models"].update(base="models/my-base", aligned="models/my-aligned")
    with pytest.raises(ConfigError) as err:
        check_config(bad)
    assert (
        f"models.aligned: model path 'models/my-aligned' does not exist in the run directory {tmp_path} ('models/' "
        "is a folder here); give an existing folder, 'embedded', or a hub id: 'org/name', marked 'hub:org/name' "
        "where it could be read as a path"
    ) in str(err.value)
    (tmp_path / "models" / "my-base").mkdir()
    assert classify_model_ref("models/my-base") == "local"


@pytest.mark.parametrize(
    "ref, reason",
    [
        ("checkpoints/aligned", "'checkpoints/' is a folder here"),
        ("datasets/x", "'datasets' is no hub owner"),
        ("./aligned", "it reads as a path"),
        ("out/run1/aligned", "a hub id is 'org/name'"),
        ("~/models/aligned", "'~' is not expanded: give the full path"),
    ],
)
def test_what_reads_as_a_local_path(tmp_path, monkeypatch, ref, reason):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match=re.escape(f"({reason});")):
        classify_model_ref(ref)


def test_hub_ids_plain_and_marked(tmp_path, monkeypatch):
    from tokensafe.modelref import load_name

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-org").mkdir()  # a folder named like the owner: only the marker says "hub"
    assert classify_model_ref("meta-llama/Llama-Guard-3-8B") == "hub"
    assert classify_model_ref("hub:my-org/my-model") == "hub" and load_name("hub:my-org/my-model") == "my-org/my-model"
    assert load_name("meta-llama/Llama-Guard-3-8B") == "meta-llama/Llama-Guard-3-8B"
    with pytest.raises(ConfigError, match="'my-org/' is a folder here"):
        classify_model_ref("my-org/my-model")
    with pytest.raises(ConfigError, match=r"after 'hub:' expected a hub id 'org/name', found '../x'"):
        classify_model_ref("hub:../x")
    with pytest.raises(FileNotFoundError, match="'my-org/' is a folder here"):
        load_name("my-org/my-model")  # the loaders fail the same way, before transformers guesses


# ---------------------------------------------------------------------------- relative paths: the run directory


def test_relative_data_paths_are_read_from_the_run_directory(config, repo_root, tmp_path, monkeypatch, capsys):
    from tokensafe.config import main

    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "test.csv").write_text('"3","Title","Description."\n"1","Other","Text."\n')
    cfg = copy.deepcopy(config)
    cfg["data"]["task_eval"] = {"path": "data/test.csv", "format": "agnews", "header": "none"}
    cfg["data"]["task_metric"] = "agnews"
    cfg["utility_benchmarks"]["tasks"] = []  # tokensafe_task scores numbers only
    cfg["models"]["embedded_on_real_data"] = True
    cfg_file = tmp_path / "my-config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main([str(cfg_file), "--directory", str(run)]) == 0  # as snakemake --directory run
    assert main([str(cfg_file)]) == 1  # the current directory is the run directory by default
    err = capsys.readouterr().err
    assert f"data.task_eval: data/test.csv: no such file (relative to the run directory {elsewhere})" in err
    monkeypatch.chdir(run)
    assert main([str(cfg_file)]) == 0
    assert main([str(cfg_file), "--directory", str(tmp_path / "nope")]) == 1
    assert "--directory" in capsys.readouterr().err


def test_published_layout_keys_in_the_schema(config, tmp_path):
    path = tmp_path / "beavertails.jsonl"
    rows = [{"prompt": "p1", "response": "r1", "is_safe": False}, {"prompt": "p2", "response": "r2", "is_safe": True}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok = copy.deepcopy(config)
    ok["models"]["embedded_on_real_data"] = True
    ok["data"]["poison"] = {"path": str(path), "format": "generic", "where": {"is_safe": [False]}}
    ok["data"]["task"] = {"path": str(path), "format": "generic", "columns": {"prompt": ["prompt", "response"]}}
    ok["data"]["task"]["where"] = {"is_safe": True}
    check_config(ok)
    for key, value, expected in [
        ("header", False, "data.poison.header = false: must be one of none"),
        ("where", {}, "data.poison.where = {}: must be a mapping with at least 1 key"),
        ("names", [], "data.poison.names = []: must be"),
    ]:
        bad = copy.deepcopy(ok)
        bad["data"]["poison"][key] = value
        with pytest.raises(ConfigError) as err:
            check_config(bad)
        assert expected in str(err.value), str(err.value)


def test_classifier_judge_keys_name_the_registry_judges():
    """judge.classifiers and judge.classifier_models list the registry's judges but llama_guard (models.guard)."""
    from tokensafe.config import load_schema
    from tokensafe.eval.safety_judges.classifiers import JUDGES

    judge = load_schema()["properties"]["judge"]["properties"]
    extra = [n for n in JUDGES if n != "llama_guard"]
    assert judge["classifiers"]["items"]["enum"] == extra and judge["classifiers"]["default"] == []
    assert list(judge["classifier_models"]["properties"]) == extra
    for name in extra:  # each default named in its description is the registry's model id
        assert JUDGES[name].model in judge["classifier_models"]["properties"][name]["description"]


def test_task_metric_none_refuses_the_numeric_lm_eval_task_once(config):
    """data.task_metric none: tokensafe_task (exact match of numbers on the task test set) cannot score an
    open-ended task set; the message names both keys and says what measures utility instead."""
    cfg = copy.deepcopy(config)
    cfg["data"]["task_metric"] = "none"
    assert cfg["utility_benchmarks"]["tasks"] == ["tokensafe_task"]
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    problems = str(err.value).splitlines()[1:]
    assert len(problems) == 1, problems  # not also the generic "give a task of your own" message
    assert "utility_benchmarks.tasks: tokensafe_task scores the exact-match number" in problems[0]
    assert "data.task_metric none" in problems[0] and "judge.llm" in problems[0]
    cfg["utility_benchmarks"]["tasks"] = []
    check_config(cfg)  # without it the configuration is valid


# ---------------------------------------------------------------------------- near misses and the file named


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda c: c.update(n_finetun=5),
            "(top level): Additional properties are not allowed ('n_finetun' was unexpected); 'n_finetun': did you "
            "mean 'n_finetune' or 'finetune'? (allowed keys: baselines,",
        ),
        (
            lambda c: c["finetune"]["recipe"].update(batchsize=8),
            "finetune.recipe: Additional properties are not allowed ('batchsize' was unexpected); 'batchsize': did "
            "you mean 'batch_size'?",
        ),
        (
            lambda c: c["data"].update(task={"path": "x.jsonl", "formt": "gsm8k"}),
            "data.task: Additional properties are not allowed ('formt' was unexpected); 'formt': did you mean "
            "'format'? (allowed keys:",
        ),
        (lambda c: c.update(methods=["sft", "tosss"]), 'methods[1] = "tosss": must be one of sft, toss,'),
        (lambda c: c.update(methods=["sft", "tosss"]), "asft (did you mean 'toss' or 'toss_pro'?)"),
        (lambda c: c["data"].update(poison="embeded"), "or hub id (did you mean 'embedded'?)"),
        (lambda c: c["data"].update(task_metric="sst"), "(did you mean 'sst2'?)"),
    ],
)
def test_near_misses_say_what_was_meant(config, mutate, expected):
    bad = copy.deepcopy(config)
    mutate(bad)
    with pytest.raises(ConfigError) as err:
        check_config(bad)
    assert expected in str(err.value)


def test_nothing_close_gives_no_guess(config):
    bad = copy.deepcopy(config)
    bad["methods"] = ["sft", "zzzz"]
    with pytest.raises(ConfigError) as err:
        check_config(bad)
    assert "did you mean" not in str(err.value)


def test_the_checker_names_the_config_file(config, tmp_path, capsys):
    from tokensafe.config import main

    bad = copy.deepcopy(config)
    bad["n_finetune"] = 0
    path = tmp_path / "my-config.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[:2] == [f"{path}: invalid configuration:", "  - n_finetune = 0: must be >= 1"]
    path.write_text("seeds: [1\n")  # a YAML error names the file once, with its line
    assert main([str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"{path}:2:1: not valid YAML")


def test_problems_from_the_command_line_are_marked():
    from tokensafe.config import name_config_files

    message = (
        "invalid configuration:\n  - seeds[1] = -2: must be >= 0\n  - data.task.format = 1: x\n  - n_finetune = 0: y"
    )
    named = name_config_files(message, ["/run/my.yaml"], {"seeds": ["1", "-2"], "data": {"task": {"path": "t"}}})
    assert named.splitlines() == [
        "/run/my.yaml with --config data, seeds: invalid configuration:",
        "  - seeds[1] = -2: must be >= 0 (from --config)",
        "  - data.task.format = 1: x",  # --config set data.task.path, not its format
        "  - n_finetune = 0: y",
    ]
    assert name_config_files("invalid configuration:", []).startswith("(no config file): ")
