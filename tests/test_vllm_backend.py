"""vLLM adapter: everything that does not need vLLM itself, plus the wiring against a fake vLLM."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest

from tokensafe.eval.generation import vllm_backend as vb
from tokensafe.eval.generation.vllm_backend import (
    decode_completion,
    engine_environment,
    engine_kwargs,
    in_request_order,
    lora_requests,
    prompt_inputs,
    require_vllm,
    run_vllm_sets,
    sampling_kwargs,
    stage_python,
    vllm_available,
    vllm_env_problem,
)

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def test_importing_the_module_does_not_import_vllm():
    code = "import sys, tokensafe.eval.generation.vllm_backend; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_vllm_available_matches_the_environment():
    assert vllm_available() is HAVE_VLLM


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed here")
def test_missing_vllm_error_says_how_to_build_it(monkeypatch):
    with pytest.raises(RuntimeError) as err:
        require_vllm()
    assert str(err.value) == (
        "generation.backend=vllm needs vLLM, which lives in its own environment: build it with `make vllm` "
        "(.venv-vllm, the interpreter generation.vllm.python names), or run with --software-deployment-method conda "
        "(envs/vllm.yaml), or set generation.backend: transformers"
    )
    with pytest.raises(RuntimeError, match="make vllm"):
        run_vllm_sets("some/model", [(["hi"], {"max_new_tokens": 4}, None)], {})
    monkeypatch.delenv(vb.ENV_PYTHON, raising=False)
    with pytest.raises(RuntimeError, match="make vllm"):
        stage_python()
    monkeypatch.setenv(vb.ENV_PYTHON, "/envs/vllm/bin/python")
    assert stage_python() == "/envs/vllm/bin/python"


def test_an_environment_without_vllm_is_named(tmp_path):
    vllm_env_problem.cache_clear()
    assert vllm_env_problem(str(tmp_path / "nope" / "python"), "nope/python") == (
        "generation.vllm.python = 'nope/python' does not exist"
    )
    if not HAVE_VLLM:  # this interpreter exists but has no vLLM
        assert vllm_env_problem(sys.executable) == f"generation.vllm.python = {sys.executable!r} cannot import vllm"


def test_engine_settings_on_cpu_and_on_gpus():
    cfg = {
        "dtype": "auto",
        "max_model_len": None,
        "kv_cache_gib": 2,
        "gpu_memory_utilization": 0.8,
        "max_lora_rank": 16,
        "max_loras": 3,
    }
    # CPU: fp32 like the transformers backend, no GPU memory fraction (vLLM would reserve that share of RAM)
    assert engine_kwargs("m", cfg, lora=False, seed=1, cuda_devices=0) == {
        "model": "m",
        "tensor_parallel_size": 1,
        "dtype": "float32",
        "seed": 1,
    }
    assert engine_environment(cfg, 0) == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    assert engine_kwargs("m", {**cfg, "max_model_len": 512}, lora=True, seed=None, cuda_devices=2) == {
        "model": "m",
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "max_model_len": 512,
        "gpu_memory_utilization": 0.8,
        "enable_lora": True,
        "max_lora_rank": 16,
        "max_loras": 3,
    }
    assert engine_environment(cfg, 2) == {}
    assert engine_kwargs("m", {**cfg, "dtype": "float16"}, lora=False, seed=None, cuda_devices=1)["dtype"] == "float16"


def test_one_lora_request_per_distinct_adapter():
    assert lora_requests([None, "/a", "/b", "/a", None]) == {"/a": ("adapter_1", 1, "/a"), "/b": ("adapter_2", 2, "/b")}
    assert lora_requests([None]) == {}


def test_completions_are_decoded_as_the_transformers_backend_decodes(word_tokenizer):
    ids = word_tokenizer(" Sure , here is how .", add_special_tokens=False)["input_ids"] + [word_tokenizer.eos_token_id]
    completion = SimpleNamespace(token_ids=ids, text=" Sure, here is how.<|end|>")
    assert decode_completion(word_tokenizer, completion) == word_tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert not decode_completion(word_tokenizer, completion).startswith(" ")


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


def test_prompts_as_text_or_token_ids():
    assert prompt_inputs(["a", [1, 2, 3]]) == ["a", {"prompt_token_ids": [1, 2, 3]}]


@pytest.mark.parametrize("prompts, match", [([], "at least one prompt"), ([[]], "token ids"), ([["a"]], "token ids")])
def test_bad_prompts_are_refused(prompts, match):
    with pytest.raises(ValueError, match=match):
        prompt_inputs(prompts)


def _out(request_id, *texts):
    return SimpleNamespace(request_id=request_id, outputs=[SimpleNamespace(text=t) for t in texts])


def test_outputs_are_put_in_request_order():
    ids = lambda outs: [o.request_id for o in outs]  # noqa: E731
    assert ids(in_request_order([_out("2", "c"), _out("0", "a"), _out("1", "b")])) == ["0", "1", "2"]
    # numbered ids with a prefix sort numerically: 9 before 10
    assert ids(in_request_order([_out("req-10", "y"), _out("req-9", "x")])) == ["req-9", "req-10"]
    # ids that do not say (no number, duplicates): the given order is kept
    assert ids(in_request_order([_out("b", "first"), _out("a", "second")])) == ["b", "a"]
    assert [o.outputs[0].text for o in in_request_order([_out("1", "x"), _out("1", "y")])] == ["x", "y"]


def _fake_vllm(monkeypatch):
    """Install a stand-in ``vllm`` package that records what run_vllm_sets passes and answers in reverse order."""
    calls: dict = {}

    class LLM:
        def __init__(self, **kwargs):
            calls["engine"] = kwargs

        def generate(self, inputs, params, lora_request=None):
            calls["inputs"], calls["params"], calls["lora"] = inputs, params, lora_request
            if calls.get("empty"):
                return [SimpleNamespace(request_id="0", outputs=[])]
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


def test_one_engine_for_every_set_each_with_its_sampling_and_adapter(monkeypatch):
    calls = _fake_vllm(monkeypatch)
    monkeypatch.setattr(vb, "check_cpu_head_size", lambda model: calls.setdefault("checked", model))
    cfg = {"dtype": "auto", "kv_cache_gib": 1, "max_lora_rank": 16, "max_loras": 4}
    out = run_vllm_sets(
        "base/model",
        [
            (["h0", [5, 6]], {"greedy": True, "max_new_tokens": 40}, "/runs/a"),
            (["t0"], {"greedy": True, "max_new_tokens": 8}, "/runs/b"),
            (["i0"], {"greedy": True, "max_new_tokens": 8}, None),
        ],
        cfg,
        seed=3,
    )
    # outputs come back reversed from the fake engine and are put back in request order, split per set
    assert [[c.text for c in o] for o in out] == [["answer 0", "answer 1"], ["answer 2"], ["answer 3"]]
    assert calls["engine"] == {
        "model": "base/model",
        "tensor_parallel_size": 1,
        "dtype": "float32",
        "seed": 3,
        "enable_lora": True,
        "max_lora_rank": 16,
        "max_loras": 2,
    }
    assert calls["checked"] == "base/model"  # on CPU the head size is checked before the engine starts
    assert calls["inputs"] == ["h0", {"prompt_token_ids": [5, 6]}, "t0", "i0"]
    assert [p.kwargs["max_tokens"] for p in calls["params"]] == [40, 40, 8, 8]
    assert [r.args if r else None for r in calls["lora"]] == [
        ("adapter_1", 1, "/runs/a"),
        ("adapter_1", 1, "/runs/a"),
        ("adapter_2", 2, "/runs/b"),
        None,
    ]


def test_without_adapters_the_engine_has_no_lora(monkeypatch):
    calls = _fake_vllm(monkeypatch)
    monkeypatch.setattr(vb, "check_cpu_head_size", lambda model: None)
    run_vllm_sets("m", [(["x"], {"max_new_tokens": 2}, None)], {"dtype": "float16"}, logprobs=20)
    assert calls["engine"] == {"model": "m", "tensor_parallel_size": 1, "dtype": "float16"}
    assert calls["lora"] is None and calls["params"][0].kwargs["logprobs"] == 20


def test_a_request_without_completion_is_an_error(monkeypatch):
    calls = _fake_vllm(monkeypatch)
    monkeypatch.setattr(vb, "check_cpu_head_size", lambda model: None)
    calls["empty"] = True
    with pytest.raises(ValueError, match="request 0: vLLM returned no completion"):
        run_vllm_sets("m", [(["x"], {"max_new_tokens": 2}, None)], {})


def test_guard_probability_from_vllm_logprobs():
    import math

    from tokensafe.eval.safety_judges.guard_judge import verdict_probability_from_logprobs

    # the verdict step's log-probabilities, restricted to the verdict tokens (5: safe, 7 and 8: unsafe variants)
    step = {5: SimpleNamespace(logprob=math.log(0.2)), 7: SimpleNamespace(logprob=math.log(0.5)), 8: math.log(0.3)}
    assert verdict_probability_from_logprobs(step, safe_ids=[5], unsafe_ids=[7, 8]) == pytest.approx(0.8)
    # not renormalised (a free step's top-k): still the ratio over the verdict tokens that are there
    assert verdict_probability_from_logprobs({5: math.log(0.1), 7: math.log(0.3)}, [5], [7]) == pytest.approx(0.75)
    assert math.isnan(verdict_probability_from_logprobs({1: SimpleNamespace(logprob=0.0)}, [5], [7]))
    assert math.isnan(verdict_probability_from_logprobs({}, [5], [7]))
