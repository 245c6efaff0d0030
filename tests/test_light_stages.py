"""Stages that handle only tables and text must not import torch: each job is its own process, and
torch's import (~2 s, plus transformers' model stack ~3 s) would dominate these seconds-long jobs.
world_data and world_tokenizer head the DAG's critical path, so every second there is a second of
`make run`. The check runs in a fresh interpreter: this test process has torch loaded already."""

import subprocess
import sys

import pytest

LIGHT_STAGES = [
    "tokensafe.stages.world_tables",
    "tokensafe.stages.data_prep",
    "tokensafe.stages.summary",
    "tokensafe.stages.report",
]


@pytest.mark.parametrize("module", LIGHT_STAGES)
def test_light_stage_imports_no_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'peft', 'accelerate') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"{module} pulls in {out}"
