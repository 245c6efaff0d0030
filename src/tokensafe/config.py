"""Configuration: schema validation with readable errors, model references and run settings.

The Snakefile calls :func:`check_config` before it plans any job, so a bad value stops the workflow
with the config file (:func:`name_config_files`), the key, the value and what is allowed (a near miss says what
was meant), and nothing that exists is touched.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tokensafe import modelref
from tokensafe.methods.registry import METHODS
from tokensafe.plan.training import method_recipe  # noqa: F401 - part of this module's API (rules, tests)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration problem; the message names the key, the value and what is allowed."""


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _describe(err) -> str:
    """One line per schema violation: where, what was found, what is allowed."""
    where = _key(err.absolute_path)
    found = json.dumps(err.instance, default=str)
    if len(found) > 80:
        found = found[:77] + "..."
    v, s = err.validator, err.schema
    if v == "enum":
        allowed = "one of " + ", ".join(map(str, s["enum"])) + _did_you_mean(err.instance, s["enum"])
    elif v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        allowed = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v] + f" {s[v]}"
    elif v == "type":
        allowed = f"a value of type {s['type']}"
    elif v == "minProperties":
        allowed = f"a mapping with at least {s[v]} key(s)"
    elif v == "required":
        return f"{where}: {err.message}"
    elif v == "additionalProperties":
        allowed_keys = sorted(s.get("properties", {}))
        hints = "".join(
            f"; {k!r}: did you mean {close}?"
            for k in sorted(set(err.instance) - set(allowed_keys))
            if (close := _did_you_mean(k, allowed_keys, bare=True))
        )
        return f"{where}: {err.message}{hints} (allowed keys: {', '.join(allowed_keys)})"
    elif v == "oneOf" and err.context:
        # Report the branch closest to the value given rather than jsonschema's generic message; at the same depth
        # an unknown key first (a misspelled key in a source mapping).
        best = min(err.context, key=lambda e: (-len(list(e.absolute_path)), e.validator != "additionalProperties"))
        return (
            _describe(best)
            if best.absolute_path != err.absolute_path or best.validator != "const"
            else (
                f"{where} = {found}: must be 'embedded' or a mapping with a format and a path or hub id"
                + _did_you_mean(err.instance, ["embedded"])
            )
        )
    else:
        allowed = err.message
    return f"{where} = {found}: must be {allowed}"


def _did_you_mean(value, allowed, bare: bool = False) -> str:
    """The allowed spellings closest to a misspelled key or enum value ('' when none is close or not text)."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [a for a in allowed if isinstance(a, str)], n=2)
    if not close:
        return ""
    names = " or ".join(repr(c) for c in close)
    return names if bare else f" (did you mean {names}?)"


@functools.lru_cache(maxsize=4)
def _parsed_schema(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def load_schema(schema_path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema (a copy: callers may not share state); the file is read and parsed once per process,
    though the Snakefile's start-up types, validates and checks the per-method recipes against it. The method
    names (``$defs.method``) are the registry's (tokensafe.methods.registry.METHODS): a new method needs no
    schema line."""
    schema = copy.deepcopy(_parsed_schema(str(Path(schema_path).resolve())))
    if "method" in schema.get("$defs", {}):
        schema["$defs"]["method"]["enum"] = list(METHODS)
    return schema


def validate_against_schema(config: dict, schema_path: str | Path = SCHEMA_PATH) -> list[str]:
    """All schema violations as readable lines (empty when valid)."""
    import jsonschema

    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(e) for e in errors]


def coerce_command_line_values(config: Any, schema_path: str | Path = SCHEMA_PATH) -> Any:
    """Turn strings into the numbers or booleans the schema asks for, in place (returns ``config``).

    Snakemake parses ``--config key=value`` with YAML's BaseLoader, so ``--config seeds=[1,2]`` arrives as
    ``["1", "2"]``. Only a string that parses exactly as the schema's integer, number or boolean is
    converted; anything else is left for validation to report. Branches (oneOf/anyOf) are not guessed.
    """
    schema = load_schema(schema_path)
    defs = schema.get("$defs", {})

    def resolve(node: dict) -> dict:
        while isinstance(node, dict) and "$ref" in node:
            node = defs[node["$ref"].split("/")[-1]]
        return node if isinstance(node, dict) else {}

    def scalar(value: Any, node: dict) -> Any:
        kind = node.get("type")
        if not isinstance(value, str) or kind not in ("integer", "number", "boolean"):
            return value
        text = value.strip()
        if kind == "boolean":
            return {"true": True, "false": False}.get(text.lower(), value)
        try:
            return int(text) if kind == "integer" else float(text)
        except ValueError:
            return value

    def walk(value: Any, node: dict) -> Any:
        node = resolve(node)
        if isinstance(value, dict):
            props, extra = node.get("properties", {}), node.get("additionalProperties")
            for k in list(value):
                sub = props.get(k, extra if isinstance(extra, dict) else None)
                if sub is not None:
                    value[k] = walk(value[k], sub)
            return value
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            value[:] = [walk(v, node["items"]) for v in value]
            return value
        return scalar(value, node)

    return walk(config, schema)


def classify_model_ref(ref: str) -> str:
    """:func:`tokensafe.modelref.classify_model_ref`, failing as a :class:`ConfigError`."""
    try:
        return modelref.classify_model_ref(ref)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None


def _recipe_problems(config: dict, schema_path: str | Path) -> list[str]:
    """Each method's merged recipe against the schema's ``train_recipe``, errors named by the override key."""
    import jsonschema

    finetune = config.get("finetune", {})
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator({**schema["$defs"]["train_recipe"], "$defs": schema["$defs"]})
    problems = []
    for method in finetune.get("method_recipes") or {}:
        for err in validator.iter_errors(method_recipe(finetune, method)):
            err.path.extendleft(["finetune", "method_recipes", method][::-1])
            problems.append(_describe(err))
    return problems


def check_semantics(
    config: dict,
    schema_path: str | Path = SCHEMA_PATH,
    rows: dict[str, int] | None = None,
    notices: list[str] | None = None,
    data_checks: bool = True,
) -> list[str]:
    """Checks the schema cannot express: merged per-method recipes, model references, embedded pool sizes, the
    training stages' optimiser steps (``rows`` receives each loaded data source's row count), and with
    ``data_checks`` train/eval prompt overlap and prompt lengths (tokensafe.data.checks; ``notices`` receives
    what those leave to the jobs)."""
    problems = _recipe_problems(config, schema_path)
    for role in ("base", "aligned", "guard"):
        try:
            classify_model_ref(config["models"][role])
        except ConfigError as e:
            problems.append(f"models.{role}: {e}")
    for name in config["judge"].get("classifiers", []):
        ref = config["judge"].get("classifier_models", {}).get(name)
        try:
            if ref is not None and classify_model_ref(ref) == "embedded":
                problems.append(f"judge.classifier_models.{name}: no embedded stand-in: give a hub id or a folder")
        except ConfigError as e:
            problems.append(f"judge.classifier_models.{name}: {e}")
    if modelref.is_embedded(config["models"]["aligned"]) != modelref.is_embedded(config["models"]["base"]):
        problems.append(
            "models.base and models.aligned must both be 'embedded' or both be real models "
            "(the embedded aligned model is trained from the embedded base)"
        )
    from tokensafe.data.sources import check_sources
    from tokensafe.plan.training import step_problems

    rows = {} if rows is None else rows
    tables: dict = {}
    problems += check_sources(config["data"], rows, tables)
    if data_checks:
        from tokensafe.data.checks import planning_problems

        problems += planning_problems(config, tables, notices)
    demos = rows.get("safety_demos")
    if "safety_mix" in config["methods"] and demos is not None and config["baselines"]["safety_mix"]["n"] > demos:
        problems.append(
            f"baselines.safety_mix.n = {config['baselines']['safety_mix']['n']}: data.safety_demos has {demos} rows"
        )
    problems += step_problems(config, rows)
    bench = config.get("utility_benchmarks") or {}
    if bench.get("tasks"):
        from tokensafe.eval.utility.benchmark_tasks import CUSTOM_TASK, benchmark_problems

        metric = config["data"].get("task_metric", "number")
        if metric == "none" and CUSTOM_TASK in bench["tasks"]:
            problems.append(
                f"utility_benchmarks.tasks: {CUSTOM_TASK} scores the exact-match number of each task test answer, "
                "and data.task_metric none says the task set has no exact-match answers: drop it (utility then "
                "comes from the other lm-eval tasks and the LLM judge's task-set win rate, judge.llm)"
            )
            bench = {**bench, "tasks": [t for t in bench["tasks"] if t != CUSTOM_TASK]}  # one message, not two
        problems += benchmark_problems(bench, metric)
    if config["data"]["task"] == "embedded":
        from tokensafe.world.corpus import WorldSizes

        sizes = WorldSizes()
        n = config["n_finetune"]
        worst = max(round(p * n) for p in config["poison_ratios"])
        if n - min(round(p * n) for p in config["poison_ratios"]) > sizes.task_pool:
            problems.append(f"n_finetune = {n}: the embedded task pool has {sizes.task_pool} samples")
        if config["data"]["poison"] == "embedded" and worst > sizes.poison_pool:
            problems.append(
                f"poison_ratios/n_finetune ask for {worst} poison samples; the embedded pool has {sizes.poison_pool}"
            )
    problems += _scoring_problems(config, tables)
    throughput = (config.get("plan") or {}).get("throughput")
    if throughput and not Path(throughput).is_file():
        problems.append(
            f"plan.throughput: {throughput}: no such file (relative to the run directory {Path.cwd()}); a table "
            "that python -m tokensafe.plan --calibrate wrote, or null"
        )
    return problems


def _scoring_problems(config: dict, tables: dict) -> list[str]:
    """Settings whose scores could only be meaningless (tokensafe.plan.scoring)."""
    from tokensafe.plan.scoring import embedded_model_problems, metric_problems

    return metric_problems(config["data"], tables.get("task_eval")) + embedded_model_problems(config)


def check_config(
    config: dict,
    schema_path: str | Path = SCHEMA_PATH,
    rows: dict[str, int] | None = None,
    notices: list[str] | None = None,
    data_checks: bool = True,
) -> None:
    """Raise :class:`ConfigError` listing every problem, or return quietly (the others: see check_semantics)."""
    problems = validate_against_schema(config, schema_path)
    if not problems:
        problems = check_semantics(config, schema_path, rows, notices, data_checks)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _from_command_line(key: str, command_line: Mapping) -> bool:
    """Whether the dotted ``key`` (``data.task.format``, ``seeds[1]``) was set by Snakemake's ``--config``: its
    path runs into a value given there (``--config n_finetune=5``, ``--config 'data={task: ...}'``)."""
    node: Any = command_line
    for part in re.findall(r"[^.\[\]]+", key):
        if not isinstance(node, Mapping):
            return True  # a value --config gave, and the key points inside it (a list item)
        if part not in node:
            return False
        node = node[part]
    return True


def name_config_files(message: str, configfiles: Sequence, command_line: Mapping | None = None) -> str:
    """A :class:`ConfigError`'s message as the run sees it: the config file(s) in use first (Snakemake's
    ``--configfile`` files or the workflow's ``config.yaml``), then the keys ``--config`` set, each problem they
    cause marked "(from --config)"."""
    where = ", ".join(str(f) for f in configfiles) or "(no config file)"
    command_line = command_line or {}
    if command_line:
        where += f" with --config {', '.join(sorted(command_line))}"
    lines = message.splitlines()
    for i, line in enumerate(lines):
        key = re.match(r"\s*- ([A-Za-z_][\w-]*(?:\.[\w-]+|\[\d+\])*)", line)
        if key and command_line and _from_command_line(key.group(1), command_line):
            lines[i] = f"{line} (from --config)"
    return f"{where}: " + "\n".join(lines)


def settings_hash(settings: dict) -> str:
    """Stable short hash of resolved settings (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def ratio_tag(p: float) -> str:
    """Canonical text of a poison ratio in paths: 0.1 -> '0.1', 0 -> '0.0'."""
    return repr(float(p))


def load_config_file(path: str | Path) -> dict:
    """Read a YAML config; a syntax error names the file, line and column."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(data).__name__}")
    return data


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m tokensafe.config",
        description="Check a tokensafe config file (YAML syntax, schema, model paths, data columns) "
        "without running anything.",
    )
    parser.add_argument("config", nargs="?", default="config.yaml", help="config file (default: config.yaml)")
    parser.add_argument(
        "--directory",
        "-d",
        default=".",
        metavar="DIR",
        help="the run directory that relative data and model paths are read from, as snakemake --directory "
        "(default: the current directory)",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config_file(args.config)  # the config file itself is named from here, as Snakemake's
        if not Path(args.directory).is_dir():
            raise ConfigError(f"--directory {args.directory}: no such folder")
        rows: dict[str, int] = {}
        notices: list[str] = []
        with contextlib.chdir(args.directory):
            check_config(config, rows=rows, notices=notices)
    except (ConfigError, FileNotFoundError) as e:
        text = str(e)  # a YAML error names the file, line and column itself
        print(text if text.startswith(f"{args.config}:") else name_config_files(text, [args.config]), file=sys.stderr)
        return 1
    for line in notices:
        print(f"{args.config}: {line}", file=sys.stderr)
    from tokensafe.plan.training import format_table

    print(f"{args.config}: OK\n\nTraining stages (optimiser steps per job):\n{format_table(config, rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
