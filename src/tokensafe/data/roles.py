"""The data roles a run reads (``data.<role>`` in config.yaml): the one list of their names.

Each role names the embedded world table that stands in for it and the columns its rows must have.
The rules build one ``results/data/<role>.parquet`` per role; the config schema's ``data`` keys are
tested against this table (``tests/test_registry.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    world_table: str  # the embedded world's table for ``data.<role>: embedded``
    required: tuple[str, ...]  # columns every row must have a value in


ROLES: dict[str, Role] = {
    "task": Role("task_train", ("prompt", "response")),
    "poison": Role("poison_pool", ("prompt", "response")),
    "task_eval": Role("task_test", ("prompt", "reference")),
    "harmful_eval": Role("harmful_eval", ("prompt",)),
    "harmful_ref": Role("harmful_ref", ("prompt", "response")),
    "utility_ref": Role("utility_ref", ("prompt", "response")),
    "safety_prompts": Role("safety_prompts", ("prompt",)),
    "safety_demos": Role("safety_demos", ("prompt", "response")),
}
