"""Each preparation stage reads exactly the config keys that its rule passes (tokensafe.rerun.stage_keys): read
from the stage functions' source, so a key read but not passed (no rerun when it changes) fails here."""

import ast
import inspect

import pytest
import yaml

from tokensafe.methods.pact import calibrated_reference, safety_tokens
from tokensafe.methods.toss import reference_models
from tokensafe.rerun import stage_keys
from tokensafe.train import loss_dumps

from workflow_utils import REPO


def method_keys_read(fn) -> set[str]:
    """Keys a stage function reads from ``settings["method_settings"]``, directly or through a local alias."""
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    aliases = {"method_settings"}
    for node in ast.walk(tree):  # pact = settings["method_settings"]
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Subscript)
            and getattr(node.value.slice, "value", None) == "method_settings"
        ):
            aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    keys = set()
    for node in ast.walk(tree):
        base, key = None, None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            base, key = node.value, node.slice.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            base, key = node.func.value, node.args[0].value
        if base is None:
            continue
        if isinstance(base, ast.Name) and base.id in aliases - {"method_settings"}:
            keys.add(key)
        elif isinstance(base, ast.Subscript) and getattr(base.slice, "value", None) == "method_settings":
            keys.add(key)
    return keys


@pytest.mark.parametrize(
    "fn, declared",
    [
        (safety_tokens.write_safe_responses, stage_keys.PACT_SAFE_RESPONSES),
        (safety_tokens.write_safety_tokens, stage_keys.PACT_SAFETY_TOKENS),
        (calibrated_reference.write_reference_signals, stage_keys.PACT_REFERENCE),
        (reference_models.train_reference, stage_keys.TOSS_REFERENCE),
        (loss_dumps.dump_losses, stage_keys.TOSS_LOSSES),
    ],
)
def test_a_stage_reads_exactly_its_declared_keys(fn, declared):
    assert method_keys_read(fn) == set(declared)


def test_the_reader_sees_aliases_and_get():
    def stage(settings):
        cfg = settings["method_settings"]
        return cfg["a"], cfg.get("b", 1), settings["method_settings"]["c"], settings["seed"]

    assert method_keys_read(stage) == {"a", "b", "c"}


def test_declared_keys_are_config_keys():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]
    for section, names in (
        ("pact", ("PACT_SAFE_RESPONSES", "PACT_SAFETY_TOKENS", "PACT_REFERENCE")),
        ("toss", ("TOSS_REFERENCE", "TOSS_LOSSES")),
    ):
        props = set(schema[section]["properties"])
        for name in names:
            assert set(getattr(stage_keys, name)) <= props, name
