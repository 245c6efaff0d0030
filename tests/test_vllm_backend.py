"""vLLM adapter: everything that does not need vLLM itself, plus the wiring against a fake vLLM."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest

from tokensafe.eval import vllm_backend as vb
from tokensafe.eval.vllm_backend import (
    build_requests,
    collect_outputs,
    require_vllm,
    run_vllm,
    sampling_kwargs,
    vllm_available,
)

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def test_importing_the_module_does_not_import_vllm():
    code = "import sys, tokensafe.eval.vllm_backend; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_vllm_available_matches_the_environment():
    assert vllm_available() is HAVE_VLLM


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed here")
def test_missing_vllm_error_says_where_vllm_lives():
    with pytest.raises(RuntimeError) as err:
        require_vllm()
    assert str(err.value) == (
        "generation.backend=vllm needs vLLM, which lives in its own environment: run with "
        "--software-deployment-method conda (envs/vllm.yaml) or the slurm profile, "
        "or set generation.backend: transformers"
    )
    with pytest.raises(RuntimeError, match="envs/vllm.yaml"):
        run_vllm("some/model", ["hi"], {"max_new_tokens": 4})


def test_sampling_kwargs_greedy_is_temperature_zero():
    # PACT: greedy, 1024 new tokens; a sampling temperature in the config is overridden
    cfg = {"greedy": True, "temperature": 0.7, "top_p": 0.5, "max_new_tokens": 1024, "backend": "vllm"}
    assert sampling_kwargs(cfg) == {
        "n": 1,
        "max_tokens": 1024,
        "repetition_penalty": 1.0,
        "temperature": 0.0,
        "top_p": 1.0,
    }


def test_sampling_kwargs_seal_sampling():
    # SEAL defaults (docs/methods.md §1.8): top_p 0.9, temperature 1.0, repetition_penalty 1.2, max_len 2048
    cfg = {
        "greedy": False,
        "temperature": 1.0,
        "top_p": 0.9,
        "repetition_penalty": 1.2,
        "max_new_tokens": 2048,
        "seed": 7,
        "stop": "</s>",
    }
    assert sampling_kwargs(cfg) == {
        "n": 1,
        "max_tokens": 2048,
        "repetition_penalty": 1.2,
        "temperature": 1.0,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["</s>"],
    }


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({}, "missing 'max_new_tokens'"),
        ({"max_new_tokens": 0}, "positive integer"),
        ({"max_new_tokens": 8, "greedy": "yes"}, "true/false"),
        ({"max_new_tokens": 8, "temperature": 0.0}, "temperature"),
        ({"max_new_tokens": 8, "top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 8, "repetition_penalty": 0}, "repetition_penalty"),
    ],
)
def test_sampling_kwargs_rejects_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        sampling_kwargs(cfg)


def test_build_requests_with_and_without_adapter():
    reqs = build_requests(["a", "b"], "/runs/lora", adapter_id=3)
    assert reqs == [
        {"prompt": "a", "lora": ("adapter_3", 3, "/runs/lora")},
        {"prompt": "b", "lora": ("adapter_3", 3, "/runs/lora")},
    ]
    assert build_requests(["a", [1, 2, 3]], None) == [
        {"prompt": "a", "lora": None},
        {"prompt": [1, 2, 3], "lora": None},
    ]


@pytest.mark.parametrize(
    "prompts, adapter, adapter_id, match",
    [
        ([], None, 1, "at least one prompt"),
        (["a"], "/x", 0, "positive integer"),
        (["a"], "/x", True, "positive integer"),
        ([[]], None, 1, "token ids"),
        ([["a"]], None, 1, "token ids"),
    ],
)
def test_build_requests_rejects_bad_input(prompts, adapter, adapter_id, match):
    with pytest.raises(ValueError, match=match):
        build_requests(prompts, adapter, adapter_id)


def _out(request_id, *texts):
    return SimpleNamespace(request_id=request_id, outputs=[SimpleNamespace(text=t) for t in texts])


def test_collect_outputs_reorders_by_request_id():
    outs = [_out("2", "c"), _out("0", "a", "a2"), _out("1", "b")]
    assert collect_outputs(outs) == ["a", "b", "c"]  # first completion of each, ids 0, 1, 2
    # numbered ids with a prefix sort numerically: 9 before 10
    assert collect_outputs([_out("req-10", "y"), _out("req-9", "x")]) == ["x", "y"]


def test_collect_outputs_keeps_order_when_ids_do_not_say():
    assert collect_outputs([_out("b", "first"), _out("a", "second")]) == ["first", "second"]
    assert collect_outputs([_out("1", "first"), _out("1", "second")]) == ["first", "second"]  # duplicate ids


def test_collect_outputs_requires_a_completion():
    with pytest.raises(ValueError, match="request 4: vLLM returned no completion"):
        collect_outputs([SimpleNamespace(request_id="4", outputs=[])])


def _fake_vllm(monkeypatch):
    """Install a stand-in ``vllm`` package that records what run_vllm passes and answers in reverse order."""
    calls: dict = {}

    class LLM:
        def __init__(self, **kwargs):
            calls["engine"] = kwargs

        def generate(self, inputs, params, lora_request=None):
            calls["inputs"], calls["params"], calls["lora"] = inputs, params, lora_request
            outs = [_out(str(i), f"answer {i}") for i in range(len(inputs))]
            return outs[::-1]  # out of order on purpose

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LoRARequest:
        def __init__(self, name, int_id, path):
            self.args = (name, int_id, path)

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    monkeypatch.setattr(vb, "vllm_available", lambda: True)
    return calls


def test_run_vllm_wiring_with_adapter(monkeypatch):
    calls = _fake_vllm(monkeypatch)
    texts = run_vllm(
        "base/model",
        ["p0", [5, 6]],
        {"greedy": True, "max_new_tokens": 16, "seed": 1},
        adapter_path="/runs/lora",
        max_lora_rank=32,
    )
    assert texts == ["answer 0", "answer 1"]  # submission order restored
    assert calls["engine"] == {
        "model": "base/model",
        "tensor_parallel_size": 1,
        "dtype": "bfloat16",
        "seed": 1,
        "enable_lora": True,
        "max_lora_rank": 32,
    }
    assert calls["inputs"] == ["p0", {"prompt_token_ids": [5, 6]}]
    assert calls["params"].kwargs["temperature"] == 0.0 and calls["params"].kwargs["max_tokens"] == 16
    assert [r.args for r in calls["lora"]] == [("adapter_1", 1, "/runs/lora")] * 2


def test_run_vllm_wiring_without_adapter(monkeypatch):
    calls = _fake_vllm(monkeypatch)
    assert run_vllm("m", ["x"], {"max_new_tokens": 2}, tensor_parallel_size=2, dtype="float16") == ["answer 0"]
    assert calls["engine"] == {"model": "m", "tensor_parallel_size": 2, "dtype": "float16"}
    assert calls["lora"] is None


def test_run_vllm_sets_one_engine_per_model_and_sampling_per_set(monkeypatch):
    from tokensafe.eval.vllm_backend import run_vllm_sets

    calls = _fake_vllm(monkeypatch)
    out = run_vllm_sets(
        "base/model",
        [(["h0", "h1"], {"greedy": True, "max_new_tokens": 40}), (["t0"], {"greedy": True, "max_new_tokens": 8})],
        adapter_path="/runs/a",
    )
    # outputs come back reversed from the fake engine and are put back in request order, split per set
    assert out == [["answer 0", "answer 1"], ["answer 2"]]
    assert [p.kwargs["max_tokens"] for p in calls["params"]] == [40, 40, 8]
    assert calls["engine"]["enable_lora"] is True and calls["lora"].args == ("adapter_1", 1, "/runs/a")


def test_guard_probability_from_vllm_logprobs():
    import math

    from tokensafe.eval.guard_judge import verdict_probability_from_logprobs

    # step 0 is "\n\n" (skipped), step 1 holds the verdict: P(unsafe) = 0.6 / (0.6 + 0.2) = 0.75
    steps = [
        {9: SimpleNamespace(logprob=0.0)},
        {5: SimpleNamespace(logprob=math.log(0.2)), 7: SimpleNamespace(logprob=math.log(0.6))},
    ]
    assert verdict_probability_from_logprobs(steps, ["\n\n", "unsafe"], safe_ids=[5], unsafe_ids=[7]) == pytest.approx(
        0.75
    )
    assert math.isnan(verdict_probability_from_logprobs([{1: SimpleNamespace(logprob=0.0)}], ["x"], [5], [7]))
