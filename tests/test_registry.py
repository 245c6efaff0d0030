"""One source of truth per name list: the registries in the package, and the schema and rules that must agree."""

import yaml

from tokensafe.config import load_schema, validate_against_schema
from tokensafe.data.formats import FORMATS
from tokensafe.data.roles import ROLES
from tokensafe.methods.pact.ladder import LADDER
from tokensafe.methods.registry import (
    METHODS,
    Method,
    builder,
    family_methods,
    finetune_extra_inputs,
    method_settings,
)

from workflow_utils import REPO, load_default_config

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def test_the_schema_takes_its_method_enum_from_the_registry():
    """The schema file names no method: validation fills $defs.method's enum with the registry's names."""
    assert "enum" not in SCHEMA["$defs"]["method"] and SCHEMA["$defs"]["method"]["type"] == "string"
    assert load_schema()["$defs"]["method"]["enum"] == list(METHODS)
    text = (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert text.count('$ref: "#/$defs/method"') == 5  # methods, the per-method overrides, judge.llm.reference


def test_an_unknown_method_in_the_config_names_the_registry_methods():
    c = load_default_config()
    c["methods"] = ["sft", "tos"]
    assert validate_against_schema(c) == [
        f"methods[1] = \"tos\": must be one of {', '.join(METHODS)} (did you mean 'toss'?)"
    ]


def test_a_registered_method_is_a_valid_config_value(monkeypatch):
    monkeypatch.setitem(METHODS, "my_method", Method("sft", "tokensafe.methods.sft:build_sft"))
    c = load_default_config()
    c["methods"] = ["sft", "my_method"]
    c["method_seeds"] = {"my_method": [1]}
    assert validate_against_schema(c) == []
    assert method_settings(c, "my_method") == {} and finetune_extra_inputs(c, "my_method", "0.1", "1") == {}


def test_the_schema_data_keys_are_the_roles():
    settings = ("task_metric", "allow_overlap", "truncate_long_prompts")  # settings, not tables
    keys = [k for k in SCHEMA["properties"]["data"]["properties"] if k not in settings]
    assert keys == list(ROLES)
    assert set(SCHEMA["properties"]["data"]["required"]) <= set(ROLES)


def test_the_schema_format_enum_is_the_format_registry():
    source = next(b for b in SCHEMA["$defs"]["source"]["oneOf"] if b.get("type") == "object")
    assert source["properties"]["format"]["enum"] == list(FORMATS)


def test_every_builder_resolves_and_the_ladder_is_the_pact_family():
    for method in METHODS:
        assert callable(builder(method)), method
    assert family_methods("pact") == list(LADDER)
    assert {spec.family for spec in METHODS.values()} == {"sft", "toss", "pact", "baselines"}


def test_an_unknown_method_names_the_known_ones():
    import pytest

    with pytest.raises(ValueError, match=r"unknown method 'dpo'; known: asft, constrained_sft"):
        builder("dpo")


def test_the_default_config_runs_every_registered_method():
    """So the default plan (tests/test_dag.py) exercises every method's rule-side settings and inputs."""
    assert sorted(load_default_config()["methods"]) == sorted(METHODS)
