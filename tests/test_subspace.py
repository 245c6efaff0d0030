"""SafeLoRA and AsFT (docs/methods.md §4): hand-computed projectors, similarities, layer choice, penalty and
gradients."""

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from tokensafe.methods.baselines.subspace import (
    alignment_projector,
    apply_safelora,
    asft_penalty,
    choose_safelora_layers,
    peft_key,
    projectors_from_models,
    safelora_similarity,
)

# V = [[1,2],[2,4]] = u-direction (1,2) in both columns; ||V||_F = sqrt(1+4+4+16) = 5.
# V V^T = [[1+4, 2+8], [2+8, 4+16]] = [[5,10],[10,20]]  ->  C = V V^T / 5 = [[1,2],[2,4]].
# C = 5 * u u^T with u = (1,2)/sqrt5, so C^2 = 5 C: the spec's C is NOT a projector here.
V_SPEC = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
C_SPEC = torch.tensor([[1.0, 2.0], [2.0, 4.0]])


def test_alignment_projector_hand_2x2():
    base = torch.tensor([[0.5, -1.0], [3.0, 0.0]])
    C = alignment_projector(base + V_SPEC, base)
    assert torch.allclose(C, C_SPEC, atol=1e-6)
    assert torch.allclose(C @ C, 5 * C, atol=1e-5)  # documented: not idempotent
    # V = [[0.6, 0.8], [0, 0]] has ||V||_F = 1 and rank 1: V V^T = [[1, 0], [0, 0]] -> an exact projector
    C1 = alignment_projector(torch.tensor([[0.6, 0.8], [0.0, 0.0]]), torch.zeros(2, 2))
    assert torch.allclose(C1, torch.tensor([[1.0, 0.0], [0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(C1 @ C1, C1, atol=1e-6)
    # non-square [out=2, in=3] weights give C [out, out]: V = [[1,0,0],[0,0,0]], ||V|| = 1 -> C = diag(1, 0)
    C3 = alignment_projector(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), torch.zeros(2, 3))
    assert torch.allclose(C3, torch.diag(torch.tensor([1.0, 0.0])))


def test_alignment_projector_rejects_identical_and_mismatched():
    w = torch.randn(3, 2)
    with pytest.raises(ValueError, match="no alignment direction"):
        alignment_projector(w, w.clone())
    with pytest.raises(ValueError, match="same shape"):
        alignment_projector(torch.zeros(2, 2), torch.zeros(2, 3))


def test_similarity_inside_outside_and_mixed():
    # inside: columns along (1,2): dW = [[1,0],[2,0]] -> C dW = [[5,0],[10,0]] = 5 dW -> cos = 1
    assert safelora_similarity(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), C_SPEC) == pytest.approx(1.0, abs=1e-6)
    # outside: columns along (2,-1) (orthogonal to (1,2)): C dW = 0 -> defined as 0.0
    assert safelora_similarity(torch.tensor([[2.0, 0.0], [-1.0, 0.0]]), C_SPEC) == 0.0
    # mixed: dW = [[1,2],[0,-1]]; C col1 = C(1,0) = (1,2), C col2 = C(2,-1) = (0,0) -> C dW = [[1,0],[2,0]]
    # <dW, C dW> = 1*1 + 2*0 + 0*2 + (-1)*0 = 1 ; ||dW|| = sqrt(1+4+0+1) = sqrt6 ; ||C dW|| = sqrt5
    # cos = 1/sqrt30 = 0.1825742
    got = safelora_similarity(torch.tensor([[1.0, 2.0], [0.0, -1.0]]), C_SPEC)
    assert got == pytest.approx(1 / math.sqrt(30), rel=1e-6)
    # no update: 0/0 defined as 1.0 (nothing to project)
    assert safelora_similarity(torch.zeros(2, 2), C_SPEC) == 1.0
    # scale invariance: the LoRA scaling does not change the score
    assert safelora_similarity(7.5 * torch.tensor([[1.0, 2.0], [0.0, -1.0]]), C_SPEC) == pytest.approx(got)


def test_choose_layers_by_threshold_and_count():
    sims = {"b": 0.9, "a": 0.2, "d": 0.5, "c": 0.49}
    # threshold 0.5, strict "<": a (0.2) and c (0.49); d (0.5) is not below 0.5
    assert choose_safelora_layers(sims, threshold=0.5) == ["a", "c"]
    # the 3 least similar: a (0.2), c (0.49), d (0.5), returned sorted by name
    assert choose_safelora_layers(sims, num_layers=3) == ["a", "c", "d"]
    assert choose_safelora_layers(sims, num_layers=0) == []
    assert choose_safelora_layers(sims, num_layers=10) == ["a", "b", "c", "d"]
    # ties broken by name: x and y tie at 0.1, the single pick is x
    assert choose_safelora_layers({"y": 0.1, "x": 0.1}, num_layers=1) == ["x"]


def test_default_choice_is_ibms_10_least_similar_modules():
    # IBM/SafeLoRA config.py: select_layers_type="number", num_proj_layers=10, counted per LoRA module
    # (q_proj and v_proj of a block are two). 16 modules of 8 blocks; similarity 0.05 * (k + 1) for the k-th
    # module in this order, so the 10 least similar are the first 10 listed.
    order = [f"layers.{i}.{m}_proj" for i in (7, 0, 5, 2, 3, 6, 1, 4) for m in ("v", "q")]
    sims = {name: 0.05 * (k + 1) for k, name in enumerate(order)}
    expected = sorted(order[:10])
    assert choose_safelora_layers(sims) == expected
    # both rules named stays the only error; either one alone overrides the default
    assert choose_safelora_layers(sims, threshold=0.151) == sorted(order[:3])
    assert len(choose_safelora_layers(sims, num_layers=12)) == 12


def test_choose_layers_takes_at_most_one_rule():
    with pytest.raises(ValueError, match="at most one"):
        choose_safelora_layers({"a": 0.1}, threshold=0.5, num_layers=1)
    with pytest.raises(ValueError, match="finite"):
        choose_safelora_layers({"a": float("nan")}, threshold=0.5)
    with pytest.raises(ValueError, match="num_layers must be >= 0"):
        choose_safelora_layers({"a": 0.1}, num_layers=-1)


def test_peft_key():
    assert peft_key("model.layers.0.self_attn.q_proj") == "base_model.model.model.layers.0.self_attn.q_proj"
    assert peft_key("base_model.model.p1") == "base_model.model.p1"  # idempotent


# ---------------------------------------------------------------- tiny Llama + peft (SafeLoRA end to end)


def _tiny_llama(seed: int):
    from tiny_models import tiny_llama

    return tiny_llama(20, seed=seed)


def _lora_llama(aligned):
    model = get_peft_model(aligned, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(3)
    with torch.no_grad():  # peft initialises lora_B to 0; randomise it so dW != 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p))
    return model


def test_projectors_from_models_keys_and_values():
    aligned, base = _tiny_llama(1), _tiny_llama(2)
    projectors = projectors_from_models(aligned, base, ["q_proj", "v_proj"])
    expected_keys = {f"base_model.model.model.layers.{i}.self_attn.{m}_proj" for i in range(2) for m in ("q", "v")}
    assert set(projectors) == expected_keys
    name = "model.layers.1.self_attn.v_proj"
    v = aligned.get_submodule(name).weight - base.get_submodule(name).weight
    assert torch.allclose(projectors[peft_key(name)], v @ v.T / torch.linalg.matrix_norm(v), atol=1e-6)
    with pytest.raises(ValueError, match="no alignment direction"):
        projectors_from_models(aligned, aligned, ["q_proj"])
    with pytest.raises(ValueError, match="no Linear"):
        projectors_from_models(aligned, base, ["nope_proj"])


def test_apply_safelora_merged_weights():
    aligned, base = _tiny_llama(1), _tiny_llama(2)
    projectors = projectors_from_models(aligned, base, ["q_proj", "v_proj"])
    model = _lora_llama(aligned)
    lora = {n: m for n, m in model.named_modules() if n in projectors}
    w0 = {n: m.base_layer.weight.detach().clone() for n, m in lora.items()}
    dw = {n: m.get_delta_weight("default").detach().clone() for n, m in lora.items()}  # B A * scaling
    expected_sims = {n: safelora_similarity(dw[n], projectors[n]) for n in lora}

    report = apply_safelora(model, projectors, num_layers=2)
    chosen = {n for n, r in report["layers"].items() if r["projected"]}
    # the two least similar of the four layers are projected
    assert chosen == set(sorted(expected_sims, key=expected_sims.get)[:2])
    assert report["num_projected"] == 2
    for n in lora:
        assert report["layers"][n]["similarity"] == pytest.approx(expected_sims[n], abs=1e-6)

    merged = model.merge_and_unload()
    for n in lora:
        w = merged.get_submodule(n.removeprefix("base_model.model.")).weight
        target = w0[n] + (projectors[n] @ dw[n] if n in chosen else dw[n])
        assert torch.allclose(w, target, atol=1e-5), n


def test_apply_safelora_threshold_and_key_errors():
    aligned, base = _tiny_llama(1), _tiny_llama(2)
    projectors = projectors_from_models(aligned, base, ["q_proj", "v_proj"])
    model = _lora_llama(aligned)
    # a threshold above every similarity (all are <= 1) projects all four layers
    report = apply_safelora(model, projectors, threshold=1.01)
    assert report["num_projected"] == 4
    # no rule given: IBM's 10 least similar, which on 4 LoRA modules is all of them
    report = apply_safelora(model, projectors)
    assert report["num_layers"] == 10 and report["threshold"] is None and report["num_projected"] == 4
    with pytest.raises(ValueError, match="no LoRA layer"):
        apply_safelora(model, {"model.layers.0.self_attn.q_proj": projectors[next(iter(projectors))]})
    partial = {k: v for k, v in projectors.items() if "q_proj" in k}
    with pytest.raises(ValueError, match="no projector"):
        apply_safelora(model, partial)
    assert apply_safelora(model, partial, threshold=-1.0, strict=False)["num_projected"] == 0


# ---------------------------------------------------------------- AsFT penalty


class _TwoLinear(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.p1 = nn.Linear(dim, dim, bias=False)
        self.p2 = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        return self.p2(self.p1(x))


def _lora_two_linear(dim: int, r: int, alpha: float):
    return get_peft_model(_TwoLinear(dim), LoraConfig(r=r, lora_alpha=alpha, target_modules=["p1", "p2"]))


def _set(model, layer: str, a, b):
    mod = model.get_submodule(f"base_model.model.{layer}")
    with torch.no_grad():
        mod.lora_A["default"].weight.copy_(torch.as_tensor(a, dtype=torch.float32))
        mod.lora_B["default"].weight.copy_(torch.as_tensor(b, dtype=torch.float32))


def test_asft_penalty_hand_2x2():
    # p1: A = [[1,0]], B = [[1],[1]] -> B A = [[1,0],[1,0]]; C1 = diag(1,0) -> (I - C1) BA = [[0,0],[1,0]] -> 1
    # p2: A = [[1,1]], B = [[1],[0]] -> B A = [[1,1],[0,0]]; C2 = [[1,2],[2,4]] -> I - C2 = [[0,-2],[-2,-3]]
    #     (I - C2) BA = [[0,0],[-2,-2]] -> 4 + 4 = 8
    # Default, as the official AsFT code: dW = B A, no LoRA scaling -> lam=0.5 -> 0.5 * (1 + 8) = 4.5
    # use_scaling: r=1, alpha=2 -> scaling 2 -> dW = 2 BA -> each term x4 -> 0.5 * 4 * (1 + 8) = 18
    model = _lora_two_linear(2, r=1, alpha=2)
    _set(model, "p1", [[1.0, 0.0]], [[1.0], [1.0]])
    _set(model, "p2", [[1.0, 1.0]], [[1.0], [0.0]])
    projectors = {peft_key("p1"): torch.diag(torch.tensor([1.0, 0.0])), peft_key("p2"): C_SPEC}
    assert asft_penalty(model, projectors, lam=0.5).item() == pytest.approx(4.5, rel=1e-6)
    assert asft_penalty(model, projectors, lam=0.5, use_scaling=True).item() == pytest.approx(18.0, rel=1e-6)


def test_asft_penalty_zero_inside_exact_projector():
    # V = v z^T with ||v|| = ||z|| = 1 -> ||V||_F = 1 and C = v v^T (exact projector). If every column of B is a
    # multiple of v, then (I - C) B A = 0: penalty 0, gradient 0 w.r.t. both A and B.
    torch.manual_seed(0)
    dim, r = 4, 2
    v = torch.nn.functional.normalize(torch.randn(dim), dim=0)
    z = torch.nn.functional.normalize(torch.randn(dim), dim=0)
    C = alignment_projector(torch.outer(v, z), torch.zeros(dim, dim))
    assert torch.allclose(C, torch.outer(v, v), atol=1e-6)
    model = _lora_two_linear(dim, r=r, alpha=4)
    for layer in ("p1", "p2"):
        _set(model, layer, torch.randn(r, dim), torch.outer(v, torch.randn(r)))
    projectors = {peft_key("p1"): C, peft_key("p2"): C}
    pen = asft_penalty(model, projectors)
    pen.backward()
    # zero up to float32 rounding of C = v v^T (residuals ~1e-7, so penalty ~1e-13 and gradients ~1e-5)
    assert pen.item() == pytest.approx(0.0, abs=1e-10)
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert len(grads) == 4 and all(g is not None and g.abs().max() < 1e-4 for g in grads)
    # contrast: push one column of p1's B out of span(v) and the penalty and gradient become O(1)
    mod = model.get_submodule("base_model.model.p1")
    with torch.no_grad():
        b = mod.lora_B["default"].weight
        b[:, 0] += torch.eye(dim)[:, 0] - v[0] * v  # add the part of e_0 orthogonal to v
    model.zero_grad()
    pen2 = asft_penalty(model, projectors)
    pen2.backward()
    assert pen2.item() > 1e-3
    assert mod.lora_B["default"].weight.grad.abs().max() > 1e-3


def test_asft_penalty_gradient_closed_form():
    # P = lam ||R||^2 with R = (I - C) M, M = s B A:
    #   dP/dB = 2 lam s (I - C)^T R A^T ,  dP/dA = 2 lam s B^T (I - C)^T R
    torch.manual_seed(1)
    dim, r, s, lam = 3, 2, 4.0 / 2, 0.7
    model = _lora_two_linear(dim, r=r, alpha=4)
    A, B = torch.randn(r, dim), torch.randn(dim, r)
    _set(model, "p1", A, B)
    _set(model, "p2", torch.zeros(r, dim), torch.zeros(dim, r))
    C = alignment_projector(torch.randn(dim, dim), torch.zeros(dim, dim))
    projectors = {peft_key("p1"): C, peft_key("p2"): C}
    pen = asft_penalty(model, projectors, lam=lam, use_scaling=True)
    pen.backward()
    I_C = torch.eye(dim) - C
    R = I_C @ (s * B @ A)
    assert pen.item() == pytest.approx(lam * R.pow(2).sum().item(), rel=1e-5)
    mod = model.get_submodule("base_model.model.p1")
    assert torch.allclose(mod.lora_B["default"].weight.grad, 2 * lam * s * I_C.T @ R @ A.T, atol=1e-4)
    assert torch.allclose(mod.lora_A["default"].weight.grad, 2 * lam * s * B.T @ I_C.T @ R, atol=1e-4)


def test_asft_penalty_errors():
    model = _lora_two_linear(2, r=1, alpha=1)
    with pytest.raises(ValueError, match="empty"):
        asft_penalty(model, {})
    with pytest.raises(ValueError, match="no projector"):
        asft_penalty(model, {peft_key("p1"): torch.eye(2)})
    with pytest.raises(ValueError, match="projector must be"):
        asft_penalty(model, {peft_key("p1"): torch.eye(3), peft_key("p2"): torch.eye(2)})
