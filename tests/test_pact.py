"""PACT math (docs/methods.md §2): hand-computed values on tiny vocabularies, plus invariants."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from tokensafe.chat import IGNORE_INDEX
from tokensafe.methods.pact.calibrated_reference import (
    align_post_view,
    answer_positions,
    assistant_header,
    assistant_header_ids,
    gather_restricted,
    no_prompt_view,
    predicting_positions,
)
from tokensafe.methods.pact.kl import (
    KLSettings,
    check_safety_set,
    dispersion_ratio,
    gate,
    mix_logits,
    pact_kl_loss,
    pact_loss,
    position_decay,
    weighted_restricted_kl,
)
from tokensafe.methods.pact.token_stats import (
    GapAccumulator,
    gap_statistics,
    safety_weights,
    select_safety_tokens,
    weight_conflicts,
)

T64 = torch.float64


def close(a, b, atol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=T64), torch.as_tensor(b, dtype=T64), atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------
# Eq. 1-2

# Sample 1 (R=2, V=3):
#   p_s = [[.5,.3,.2],[.7,.2,.1]], p_b = [[.2,.4,.4],[.3,.3,.4]]
#   Delta = [[.3,-.1,-.2],[.4,-.1,-.3]] -> mean_t = [.35,-.1,-.25]; pbar = [.6,.25,.15]
# Sample 2 (R=1): p_s = [.1,.8,.1], p_b = [.3,.2,.5] -> Delta = [-.2,.6,-.4]; pbar = [.1,.8,.1]
S1_PS = torch.tensor([[0.5, 0.3, 0.2], [0.7, 0.2, 0.1]])
S1_PB = torch.tensor([[0.2, 0.4, 0.4], [0.3, 0.3, 0.4]])
S2_PS = torch.tensor([[0.1, 0.8, 0.1]])
S2_PB = torch.tensor([[0.3, 0.2, 0.5]])


def test_gap_statistics_one_sample():
    d, p = gap_statistics(S1_PS, S1_PB)
    assert close(d, [0.35, -0.1, -0.25])
    assert close(p, [0.6, 0.25, 0.15])


def test_gap_statistics_compares_over_min_vocab():
    # §A5: aligned model has a padded 4th column; only the 3 shared ids are compared.
    ps = torch.cat([S1_PS, torch.zeros(2, 1)], dim=1)
    d, p = gap_statistics(ps, S1_PB)
    assert d.shape == (3,) and p.shape == (3,)
    assert close(d, [0.35, -0.1, -0.25])
    # and the other way round
    d2, _ = gap_statistics(S1_PS, torch.cat([S1_PB, torch.zeros(2, 2)], dim=1))
    assert close(d2, [0.35, -0.1, -0.25])


def test_gap_accumulator_is_mean_of_per_sample_means():
    acc = GapAccumulator()
    acc.add(S1_PS, S1_PB)
    acc.add(S2_PS, S2_PB)
    D, pbar, n = acc.result()
    assert n == 2
    # Eq. 2: ([.35,-.1,-.25] + [-.2,.6,-.4]) / 2 = [.075, .25, -.325]; pbar = ([.6,.25,.15]+[.1,.8,.1])/2
    assert close(D, [0.075, 0.25, -0.325])
    assert close(pbar, [0.35, 0.525, 0.125])
    # The pooled mean over the 3 positions is different: [.3+.4-.2, -.1-.1+.6, -.2-.3-.4]/3 = [1/6, 2/15, -.3]
    pooled = (torch.cat([S1_PS, S2_PS]) - torch.cat([S1_PB, S2_PB])).double().mean(0)
    assert close(pooled, [1 / 6, 2 / 15, -0.3])
    assert not close(D, pooled, atol=1e-3)
    # ...and it would even rank a different token first (token 0 pooled, token 1 under Eq. 2).
    assert int(D.argmax()) == 1 and int(pooled.argmax()) == 0


def test_gap_accumulator_errors():
    with pytest.raises(ValueError, match="before any sample"):
        GapAccumulator().result()
    acc = GapAccumulator()
    acc.add(S1_PS, S1_PB)
    with pytest.raises(ValueError, match="vocabulary size changed"):
        acc.add(torch.full((1, 4), 0.25), torch.full((1, 4), 0.25))
    with pytest.raises(ValueError, match="same"):
        gap_statistics(S1_PS, S2_PB)


# ---------------------------------------------------------------------------------------------
# Section 2.2

D5 = torch.tensor([0.1, -0.2, 0.3, 0.1, 0.0])
P5 = torch.tensor([0.05, 0.4, 0.2, 0.3, 0.05])


def test_select_by_probability_code_mode():
    # pbar order: 0.4 (id1) > 0.3 (id3) > 0.2 (id2) > 0.05 (id0) = 0.05 (id4): tie -> lower id first
    assert select_safety_tokens(D5, P5, k=3, mode="prob").tolist() == [1, 3, 2]
    assert select_safety_tokens(D5, P5, k=4, mode="prob").tolist() == [1, 3, 2, 0]
    assert select_safety_tokens(D5, P5, k=3).dtype == torch.long


def test_select_by_discrepancy_paper_mode():
    # D order: 0.3 (id2) > 0.1 (id0) = 0.1 (id3) > 0.0 (id4) > -0.2 (id1)
    assert select_safety_tokens(D5, P5, k=3, mode="discrepancy").tolist() == [2, 0, 3]
    assert select_safety_tokens(D5, P5, k=5, mode="discrepancy").tolist() == [2, 0, 3, 4, 1]


def test_select_errors():
    with pytest.raises(ValueError, match="k must be"):
        select_safety_tokens(D5, P5, k=6)
    with pytest.raises(ValueError, match="unknown token selection mode"):
        select_safety_tokens(D5, P5, k=2, mode="random")


def test_safety_weights_relu_centered():
    # D_S = D[[1,3,2]] = [-.2, .1, .3]; mean = 0.2/3; D - mean = [-.8/3, .1/3, .7/3]
    # relu -> [0, .1/3, .7/3], sum .8/3 -> [0, 1/8, 7/8]
    w = safety_weights(torch.tensor([-0.2, 0.1, 0.3]), mode="relu_centered")
    assert close(w, [0.0, 0.125, 0.875])


def test_safety_weights_raw():
    # clip at 0 then normalise: [-.2,.1,.3] -> [0,.1,.3]/.4 = [0,.25,.75]; [.3,.1,.1] -> [.6,.2,.2]
    assert close(safety_weights(torch.tensor([-0.2, 0.1, 0.3]), mode="raw"), [0.0, 0.25, 0.75])
    assert close(safety_weights(torch.tensor([0.3, 0.1, 0.1]), mode="raw"), [0.6, 0.2, 0.2])


def test_safety_weights_all_zero_raises():
    with pytest.raises(ValueError, match="constant"):
        safety_weights(torch.tensor([0.2, 0.2, 0.2]), mode="relu_centered")
    with pytest.raises(ValueError, match="<= 0"):
        safety_weights(torch.tensor([-0.1, -0.2, 0.0]), mode="raw")


# ---------------------------------------------------------------------------------------------
# Eq. 5-8


def test_dispersion_ratio_example():
    # probs [.5,.3,.15,.05], cdf [.5,.8,.95,1]; cdf < .9 at 2 entries -> k = 3, r = 3/4
    z = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert close(dispersion_ratio(z, rho=0.9), 0.75)
    # order of the logits does not matter (sorted inside); batched [..., K] -> [...]
    zb = torch.stack([z.flip(0), torch.zeros(4)])
    # uniform: cdf [.25,.5,.75,1] all < .9 except last -> k = 4, r = 1
    assert close(dispersion_ratio(zb, rho=0.9), [0.75, 1.0])


def test_dispersion_ratio_boundary_is_inclusive():
    # uniform over 4: probs exactly 0.25, cdf exactly [.25,.5,.75,1.0] in binary floating point.
    z = torch.zeros(4)
    # rho = .5: cdf < .5 only for the first entry -> k = 2 (the 2-token mass reaches rho exactly), r = .5
    assert close(dispersion_ratio(z, rho=0.5), 0.5)
    assert close(dispersion_ratio(z, rho=0.75), 0.75)
    # just above the boundary needs one more token
    assert close(dispersion_ratio(z, rho=0.5 + 1e-6), 0.75)
    # two tied tokens with all the mass: probs [.5,.5,0,0], rho=.5 -> k = 1, r = 1/4
    z2 = torch.tensor([0.0, 0.0, -float("inf"), -float("inf")])
    assert close(dispersion_ratio(z2, rho=0.5), 0.25)
    # rho = 1 never exceeds |S|
    assert close(dispersion_ratio(torch.tensor([0.3, 0.1, -2.0]), rho=1.0), 1.0)


def test_dispersion_ratio_temperature_and_no_grad():
    # logits [2 ln 2, 0] at tau_g=2 -> probs [2/3, 1/3]; at tau_g=1 -> [.8,.2]. rho=.75: k=2 vs k=1
    z = torch.tensor([2 * math.log(2.0), 0.0], requires_grad=True)
    assert close(dispersion_ratio(z, tau_g=2.0, rho=0.75), 1.0)
    r = dispersion_ratio(z, tau_g=1.0, rho=0.75)
    assert close(r, 0.5)
    assert not r.requires_grad


def test_gate_values():
    # equal r -> sigmoid(0) = .5
    assert close(gate(torch.tensor(0.3), torch.tensor(0.3)), 0.5)
    # extremes of r difference in [-1, 1] with alpha=2: sigmoid(+-2) = 0.880797 / 0.119203
    assert close(gate(torch.tensor(1.0), torch.tensor(0.0)), 1 / (1 + math.exp(-2)))
    assert close(gate(torch.tensor(0.0), torch.tensor(1.0)), 0.119203, atol=1e-6)
    r = torch.rand(200) * 2 - 1
    g = gate(r, torch.zeros(200))
    assert (g > 0.1192).all() and (g < 0.8808).all()
    # bias shifts the centre: r_theta - r_post = .25 = b -> .5
    assert close(gate(torch.tensor(0.5), torch.tensor(0.25), bias=0.25), 0.5)


def test_position_decay_values():
    pos = torch.tensor([0, 8, 9, 16])
    # 0 and 8 (= T_c) at full strength; 9 -> exp(-1/8) = 0.8824969; 16 -> exp(-1) = 0.3678794
    assert close(position_decay(pos, t_c=8, tau_d=8.0), [1.0, 1.0, math.exp(-1 / 8), math.exp(-1)])
    with pytest.raises(ValueError):
        position_decay(torch.tensor([-1]))


def test_mix_logits():
    zf = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    zp = torch.tensor([[3.0, 2.0, 1.0], [4.0, -4.0, 8.0]])
    # row 0, g=.25: .75*[1,2,3] + .25*[3,2,1] = [1.5, 2, 2.5]; row 1, g=0 -> z_full
    out = mix_logits(zf, zp, torch.tensor([0.25, 0.0]))
    assert close(out, [[1.5, 2.0, 2.5], [0.0, 0.0, 0.0]])
    assert torch.equal(mix_logits(zf, zp, torch.zeros(2)), zf)
    assert torch.equal(mix_logits(zf, zp, torch.ones(2)), zp)
    with pytest.raises(ValueError, match="gate shape"):
        mix_logits(zf, zp, torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# Eq. 3-4


def test_weighted_restricted_kl_by_hand():
    tau = 2.0
    # z = tau * log p so that softmax(z / tau) = p exactly (up to rounding)
    z_ref = tau * torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    z_th = tau * torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    # uniform: q = [.5,.25,.25]; KL = .5 ln2 + .25 ln(.25/.25) + .25 ln(.25/.5) = .25 ln 2; * tau^2 = ln 2
    assert close(weighted_restricted_kl(z_th, z_ref, None, tau), [math.log(2)], atol=1e-5)
    # w = [0,1,1]: q = [0,.25,.25]/.5 = [0,.5,.5]; KL = 0 (0 log 0) + .5 ln(.5/.25) + .5 ln(.5/.5) = .5 ln2; *4 = 2 ln2
    w = torch.tensor([0.0, 1.0, 1.0])
    assert close(weighted_restricted_kl(z_th, z_ref, w, tau), [2 * math.log(2)], atol=1e-5)
    # w = [2,1,1] (any scale): q ∝ [1,.25,.25] = [2/3,1/6,1/6];
    # KL = 2/3 ln((2/3)/.25) + 1/6 ln((1/6)/.25) + 1/6 ln((1/6)/.5)
    kl = 2 / 3 * math.log(8 / 3) + 1 / 6 * math.log(2 / 3) + 1 / 6 * math.log(1 / 3)
    assert close(weighted_restricted_kl(z_th, z_ref, torch.tensor([2.0, 1.0, 1.0]), tau), [4 * kl], atol=1e-5)
    assert close(weighted_restricted_kl(z_th, z_ref, torch.tensor([4.0, 2.0, 2.0]), tau), [4 * kl], atol=1e-5)


def test_weighted_restricted_kl_zero_weight_and_inf_logit():
    # a -inf model logit on a zero-weight token must give a finite value (0 log 0 = 0, no NaN)
    z_ref = torch.tensor([[0.0, 0.0, 0.0]])
    z_th = torch.tensor([[-float("inf"), 0.0, 0.0]])
    out = weighted_restricted_kl(z_th, z_ref, torch.tensor([0.0, 1.0, 1.0]), 2.0)
    assert torch.isfinite(out).all() and close(out, [0.0])


# ---------------------------------------------------------------------------------------------
# Eq. 3-8 assembled


def _batch(V=6, T=7, seed=0):
    """Two sequences; answer tokens at labels[0, 3:6] and labels[1, 2:7] -> shifted positions 2,3,4 and 1..5."""
    torch.manual_seed(seed)
    theta = torch.randn(2, T, V, requires_grad=True)
    ref = torch.randn(2, T, V)
    post = torch.randn(2, T, V)
    labels = torch.full((2, T), IGNORE_INDEX)
    labels[0, 3:6] = torch.tensor([1, 2, 3])
    labels[1, 2:7] = torch.tensor([0, 4, 5, 1, 2])
    return theta, ref, post, labels


def test_full_vocab_uniform_equals_ordinary_kl():
    theta, ref, _, labels = _batch()
    tau = 2.0
    loss, stats = pact_kl_loss(theta, labels, ref, KLSettings(tau_kl=tau, calibrate=False, decay=False))
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    assert stats["n_tokens"] == 3 + 5 == int(mask.sum())
    expected = (
        F.kl_div(
            F.log_softmax(theta[mask] / tau, -1), F.log_softmax(ref[mask] / tau, -1), log_target=True, reduction="sum"
        )
        / mask.sum()
        * tau**2
    )
    assert close(loss.detach(), expected.detach(), atol=1e-5)
    assert loss.item() > 0


def test_token_mean_over_batch_not_per_sample():
    theta, ref, _, labels = _batch()
    loss, _ = pact_kl_loss(theta, labels, ref, KLSettings(calibrate=False, decay=False))
    per = [
        pact_kl_loss(theta[i : i + 1], labels[i : i + 1], ref[i : i + 1], KLSettings(calibrate=False, decay=False))[0]
        for i in range(2)
    ]
    # |A| = 3 + 5: the batch loss is (3 l0 + 5 l1) / 8, not (l0 + l1) / 2
    assert close(loss.detach(), ((3 * per[0] + 5 * per[1]) / 8).detach(), atol=1e-6)
    assert not close(loss.detach(), ((per[0] + per[1]) / 2).detach(), atol=1e-4)


def test_zero_when_theta_equals_reference():
    theta, _, _, labels = _batch()
    S = torch.tensor([4, 1, 2])
    ref_S = theta.detach()[..., S].clone()
    loss, _ = pact_kl_loss(theta, labels, ref_S, KLSettings(calibrate=False, decay=False), safety_ids=S)
    assert abs(loss.item()) < 1e-6
    full, _ = pact_kl_loss(theta, labels, theta.detach().clone(), KLSettings(calibrate=False, decay=False))
    assert abs(full.item()) < 1e-6


def test_gradients_reach_theta_only_and_only_at_answer_positions():
    theta, ref, post, labels = _batch()
    S = torch.tensor([0, 3, 5])
    ref_S = ref[..., S].clone().requires_grad_(True)
    post_S = post[..., S].clone().requires_grad_(True)
    w = torch.tensor([0.2, 0.0, 0.8])
    pos = answer_positions(labels)
    loss, _ = pact_kl_loss(
        theta,
        labels,
        ref_S,
        KLSettings(calibrate=True, decay=True),
        safety_ids=S,
        weights=w,
        ref_post_S=post_S,
        answer_pos=pos,
    )
    loss.backward()
    assert ref_S.grad is None and post_S.grad is None
    g = theta.grad
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    assert (g[~mask] == 0).all()  # prompt, padding and the last position
    assert (g[mask][:, S].abs().sum(-1) > 0).all()  # every answer position gets gradient on S
    outside = torch.tensor([i for i in range(6) if i not in S.tolist()])
    assert (g[mask][:, outside] == 0).all()  # tokens outside S are untouched by the restricted KL


def test_gate_closed_equals_uncalibrated_and_open_equals_post():
    theta, ref, post, labels = _batch()
    S = torch.tensor([0, 2, 3, 5])
    w = torch.tensor([0.1, 0.4, 0.0, 0.5])
    ref_S, post_S = ref[..., S], post[..., S]
    base, _ = pact_kl_loss(theta, labels, ref_S, KLSettings(calibrate=False, decay=False), safety_ids=S, weights=w)
    # Eq. 6 with b -> +inf gives g = sigmoid(-inf) = 0: the full-context view (Eq. 7 with g = 0).
    closed, stats = pact_kl_loss(
        theta,
        labels,
        ref_S,
        KLSettings(bias=1e4, calibrate=True, decay=False),
        safety_ids=S,
        weights=w,
        ref_post_S=post_S,
    )
    assert stats["gate_mean"] == 0.0
    assert torch.equal(closed, base)
    # b -> -inf gives g = 1: the no-prompt view replaces the full one.
    opened, stats = pact_kl_loss(
        theta,
        labels,
        ref_S,
        KLSettings(bias=-1e4, calibrate=True, decay=False),
        safety_ids=S,
        weights=w,
        ref_post_S=post_S,
    )
    as_post, _ = pact_kl_loss(theta, labels, post_S, KLSettings(calibrate=False, decay=False), safety_ids=S, weights=w)
    assert stats["gate_mean"] == 1.0
    assert close(opened.detach(), as_post.detach(), atol=1e-6)


def test_calibrated_gate_and_decay_by_hand():
    # One sequence, K = |S| = 4, one answer token predicted at t = 1 (labels[2] is the answer), answer pos 9.
    tau_g_logits_theta = torch.zeros(4)  # uniform: cdf [.25,.5,.75,1], rho .9 -> k=4, r_theta = 1
    post_row = torch.tensor([10.0, 0.0, 0.0, 0.0])  # p0 = e^10/(e^10+3) = .99986 >= .9 -> k=1, r_post = .25
    theta = torch.zeros(1, 3, 4)
    theta[0, 1] = tau_g_logits_theta
    theta.requires_grad_(True)
    full = torch.zeros(1, 3, 4)
    full[0, 1] = torch.tensor([1.0, 0.0, -1.0, 0.5])
    post = torch.zeros(1, 3, 4)
    post[0, 1] = post_row
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2]])
    pos = torch.tensor([[-1, 9, -1]])
    # g = sigmoid(2 * (1 - .25)) = sigmoid(1.5) = 0.8175745; decay at pos 9: * exp(-1/8) -> 0.7214911
    g_hand = 1 / (1 + math.exp(-1.5))
    g_dec = g_hand * math.exp(-1 / 8)
    loss, stats = pact_kl_loss(
        theta, labels, full, KLSettings(calibrate=True, decay=True), ref_post_S=post, answer_pos=pos
    )
    assert stats["n_tokens"] == 1
    assert close(stats["r_theta_mean"], 1.0) and close(stats["r_post_mean"], 0.25)
    assert close(stats["gate_mean"], g_dec)
    z_mix = (1 - g_dec) * full[0, 1] + g_dec * post_row
    expected = weighted_restricted_kl(theta[0, 1:2].detach(), z_mix[None], None, 2.0)
    assert close(loss.detach(), expected[0], atol=1e-5)
    # without decay the gate is the raw sigmoid
    _, stats_nd = pact_kl_loss(
        theta, labels, full, KLSettings(calibrate=True, decay=False), ref_post_S=post, answer_pos=pos
    )
    assert close(stats_nd["gate_mean"], g_hand)


def test_pact_kl_loss_input_errors():
    theta, ref, post, labels = _batch()
    with pytest.raises(ValueError, match="ref_full_S must be"):
        pact_kl_loss(theta, labels, ref, KLSettings(calibrate=False, decay=False), safety_ids=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="ref_post_S is required"):
        pact_kl_loss(theta, labels, ref, KLSettings(calibrate=True, decay=False))
    with pytest.raises(ValueError, match="needs calibrate=True"):
        pact_kl_loss(theta, labels, ref, KLSettings(calibrate=False, decay=True))
    with pytest.raises(ValueError, match="answer_pos is required"):
        pact_kl_loss(theta, labels, ref, KLSettings(calibrate=True, decay=True), ref_post_S=post)


def test_settings_and_safety_set_are_checked_once_when_the_loss_is_built():
    with pytest.raises(ValueError, match="tau_kl must be > 0"):
        KLSettings(calibrate=False, decay=False, tau_kl=0.0)
    with pytest.raises(ValueError, match=r"rho must lie in \(0, 1\]"):
        KLSettings(calibrate=True, decay=False, rho=1.5)
    with pytest.raises(ValueError, match="t_c must be >= 0"):
        KLSettings(calibrate=True, decay=True, t_c=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        KLSettings(calibrate=False, decay=False).tau_kl = 3.0
    check_safety_set(torch.tensor([0, 5]), torch.tensor([0.5, 0.5]), vocab_size=6)
    with pytest.raises(ValueError, match=r"safety_ids must lie in \[0, 6\), got range \[0, 6\]"):
        check_safety_set(torch.tensor([0, 6]), None, vocab_size=6)
    with pytest.raises(ValueError, match="non-empty"):
        check_safety_set(torch.tensor([], dtype=torch.long), None, vocab_size=6)
    with pytest.raises(ValueError, match="weights must be >= 0 and not all zero"):
        check_safety_set(torch.tensor([0, 1]), torch.tensor([0.0, 0.0]), vocab_size=6)
    with pytest.raises(ValueError, match=r"weights must be \[2\] like safety_ids"):
        check_safety_set(torch.tensor([0, 1]), torch.tensor([1.0]), vocab_size=6)


def test_no_answer_tokens_gives_attached_zero():
    theta, ref, _, _ = _batch()
    labels = torch.full((2, 7), IGNORE_INDEX)
    loss, stats = pact_kl_loss(theta, labels, ref, KLSettings(calibrate=False, decay=False))
    assert loss.item() == 0.0 and stats["n_tokens"] == 0
    loss.backward()
    assert (theta.grad == 0).all()


def test_pact_loss_combination():
    # Eq. 9: 1.5 + 3 * 0.5 = 3.0
    assert close(pact_loss(torch.tensor(1.5), torch.tensor(0.5)), 3.0)
    assert close(pact_loss(torch.tensor(1.5), torch.tensor(0.5), lam=1.0), 2.0)


# ---------------------------------------------------------------------------------------------
# Reference-signal helpers (docs/methods.md §2.4)


def _tiny_chat_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|user|>": 1, "<|assistant|>": 2, "x": 3, "hi": 4}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    tok.chat_template = (
        "{% for m in messages %}<|{{m['role']}}|>{{m['content']}}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return tok


def test_assistant_header_from_chat_template():
    tok = _tiny_chat_tokenizer()
    assert assistant_header(tok) == "<|assistant|>"
    assert assistant_header_ids(tok) == [2]
    tok.chat_template = "{% for m in messages %}{{m['content']}}{% endfor %}"
    with pytest.raises(ValueError, match="adds nothing"):
        assistant_header(tok)


def test_no_prompt_view_and_predicting_positions():
    header, answer = [7, 8], [20, 21, 22]
    view = no_prompt_view(header, answer)
    assert view == [7, 8, 20, 21]  # header + answer[:-1]
    # row h-1 = 1 (last header token) predicts answer[0]; rows 1,2,3 predict 20,21,22
    pos = predicting_positions(len(header), len(answer))
    assert pos.tolist() == [1, 2, 3]
    # row p predicts view[p + 1]; the last row predicts answer[-1], which the view leaves out
    assert [view[p + 1] for p in pos.tolist()[:-1]] == answer[:-1]
    with pytest.raises(ValueError):
        no_prompt_view([], answer)


def test_gather_restricted():
    logits = torch.arange(20.0).reshape(4, 5)  # row r = [5r .. 5r+4]
    out = gather_restricted(logits, torch.tensor([1, 3]), torch.tensor([4, 0]))
    assert out.tolist() == [[9.0, 5.0], [19.0, 15.0]]
    assert torch.equal(gather_restricted(logits, torch.tensor([2]), None), logits[2:3])
    with pytest.raises(ValueError, match="positions"):
        gather_restricted(logits, torch.tensor([4]), None)


def test_answer_positions_and_align_post_view():
    labels = torch.tensor([IGNORE_INDEX, IGNORE_INDEX, 5, 6, 7, IGNORE_INDEX])
    # shifted position t predicts labels[t+1]: t=1 -> 5 (answer pos 0), t=2 -> 6 (1), t=3 -> 7 (2)
    assert answer_positions(labels).tolist() == [-1, 0, 1, 2, -1, -1]
    rows = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    aligned = align_post_view(rows, labels)
    assert aligned.tolist() == [[0, 0], [1, 2], [3, 4], [5, 6], [0, 0], [0, 0]]
    with pytest.raises(ValueError, match="3 answer tokens"):
        align_post_view(rows[:2], labels)


def test_reference_pipeline_matches_full_view_alignment():
    # A "model" whose logits depend only on the current token id: then the no-prompt view and the
    # full view must give identical rows at every answer position (same current tokens).
    torch.manual_seed(0)
    table = torch.randn(10, 10)
    prompt, header, answer = [1, 2, 3], [4], [5, 6, 7]
    full_ids = prompt + header + answer
    labels = torch.tensor([IGNORE_INDEX] * 4 + answer)
    S = torch.tensor([9, 5, 6])
    full_S = table[torch.tensor(full_ids)][:, S]  # aligned like theta: row t predicts t+1
    view = no_prompt_view(header, answer)
    post_rows = gather_restricted(table[torch.tensor(view)], predicting_positions(len(header), len(answer)), S)
    post_S = align_post_view(post_rows, labels)
    mask = answer_positions(labels) >= 0
    assert torch.equal(post_S[mask], full_S[mask])


def test_weight_conflicts_mark_trained_tokens_that_q_excludes():
    # S = {5, 7, 9} with weights (0.4, 0, 0.6): only token 7 is a conflict; 3 is not in S at all.
    S, w = torch.tensor([5, 7, 9]), torch.tensor([0.4, 0.0, 0.6])
    targets = torch.tensor([7, 3, 5, 7, 9])
    assert weight_conflicts(targets, S, w).tolist() == [True, False, False, True, False]
    # ...and the KL really pushes such a token down: the reference puts all S-mass on 7, q none.
    z = torch.tensor([0.0, 5.0, 0.0], requires_grad=True)
    weighted_restricted_kl(z, torch.tensor([0.0, 9.0, 0.0]), w).backward()
    assert z.grad[1] > 0  # gradient descent lowers the logit of token 7


def test_conflict_summary_counts_clean_answers_only():
    import pandas as pd

    from tokensafe.methods.pact.calibrated_reference import conflict_summary

    tokens = pd.DataFrame({"token_id": [5, 7, 9], "token": ["a", " is", "."], "weight": [0.4, 0.0, 0.6]})
    token_ids = torch.tensor([7, 5, 7, 9, 7, 7])
    sample_ids = torch.tensor([0, 0, 1, 1, 2, 2])  # sample 2 is poison
    d = conflict_summary(token_ids, sample_ids, tokens, poison={2})
    assert (d["population"], d["positions"], d["conflicts"]) == ("clean samples", 4, 2)
    assert d["share"] == 0.5 and d["zero_weight_tokens"] == 1 and d["safety_tokens"] == 3
    assert d["tokens"] == [{"token_id": 7, "token": " is", "count": 2}]
    everything = conflict_summary(token_ids, sample_ids, tokens, poison=None)
    assert (everything["population"], everything["positions"], everything["conflicts"]) == ("all samples", 6, 4)


def test_cached_reference_with_other_token_ids_is_refused():
    from types import SimpleNamespace

    import numpy as np

    from tokensafe.methods.pact.regularized_sft import attach_reference

    ex = {"input_ids": np.array([1, 2, 3, 4]), "labels": np.array([-100, -100, 3, 4])}
    ctx = SimpleNamespace(data={"sample_id": [0]}, examples=[ex])
    ref = {
        "sample_id": torch.tensor([0, 0]),
        "position": torch.tensor([1, 2]),
        "token_id": torch.tensor([3, 4]),
        "full": torch.zeros(2, 2),
        "post": torch.zeros(2, 2),
    }
    assert attach_reference(ctx, ref)[0]["answer_pos"].tolist() == [0, 0, 1, 0]
    with pytest.raises(ValueError, match="sample 0: cached reference signals do not match the training tokenisation"):
        attach_reference(ctx, {**ref, "token_id": torch.tensor([3, 5])})


def test_restricted_logits_give_the_same_kl_as_slicing_the_full_logits():
    torch.manual_seed(0)
    B, T, V = 2, 5, 11
    S = torch.tensor([1, 4, 7])
    w = torch.tensor([0.5, 0.0, 0.5])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4, 5], [IGNORE_INDEX, 2, 3, 4, IGNORE_INDEX]])
    ref = torch.randn(B, T, 3)
    full = torch.randn(B, T, V, requires_grad=True)
    sliced, _ = pact_kl_loss(full, labels, ref, KLSettings(calibrate=False, decay=False), safety_ids=S, weights=w)
    sliced.backward()
    restricted = full.detach()[..., S].clone().requires_grad_(True)
    direct, _ = pact_kl_loss(
        restricted,
        labels,
        ref,
        KLSettings(calibrate=False, decay=False, theta_restricted=True),
        safety_ids=S,
        weights=w,
    )
    direct.backward()
    assert torch.allclose(sliced, direct)
    assert torch.allclose(full.grad[..., S], restricted.grad)
    assert full.grad[..., [0, 2, 3, 5, 6, 8, 9, 10]].abs().sum() == 0  # the sliced path's dense gradient is zero off S
    with pytest.raises(ValueError, match="theta_restricted needs safety_ids and theta_logits of"):
        pact_kl_loss(
            full, labels, ref, KLSettings(calibrate=False, decay=False, theta_restricted=True), safety_ids=S, weights=w
        )


def test_restricted_head_matches_the_model_and_falls_back_when_the_head_is_not_linear():
    from tokensafe.methods.pact.regularized_sft import RestrictedLogits
    from tokensafe.train.lora import add_lora

    from tiny_models import tiny_llama

    model = add_lora(tiny_llama(40, max_positions=32).train(), 4, 8, 0.0, ["q_proj", "v_proj"], seed=0)
    ids, x = torch.tensor([3, 9, 17, 30]), torch.randint(0, 40, (2, 7))
    out = model(input_ids=x, output_hidden_states=True)
    head = RestrictedLogits(ids)
    z = head(model, out)
    assert head.direct is True and z.shape == (2, 7, 4)
    assert torch.allclose(z, out.logits[..., ids], atol=1e-5)
    z.sum().backward()  # gradient reaches the LoRA weights through the hidden state
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)

    class Scaled:  # logits = 2 x head(h): what a logit scale or soft-capping does to the direct path
        def __init__(self, out):
            self.logits, self.hidden_states = 2 * out.logits.detach(), out.hidden_states

    scaled, fallback = Scaled(out), RestrictedLogits(ids)
    assert torch.equal(fallback(model, scaled), scaled.logits[..., ids]) and fallback.direct is False


def test_reference_file_metadata_is_one_key_of_sorted_json():
    """Two safetensors metadata keys come out in a per-process hash order (measured: the same run's reference
    file differed byte for byte between two runs); one key of sorted JSON does not."""
    import json as _json

    from tokensafe.methods.pact.calibrated_reference import file_metadata

    meta = file_metadata(tokens="t.parquet", data="d.parquet")
    assert list(meta) == ["tokensafe"] and meta["tokensafe"] == '{"data": "d.parquet", "tokens": "t.parquet"}'
    assert _json.loads(meta["tokensafe"]) == {"data": "d.parquet", "tokens": "t.parquet"}


# ---------------------------------------------------------------------------------------------
# Safety-token views (docs/methods.md §2.1)


def test_safety_token_views_feed_no_special_token_the_official_code_does_not(hub_style_tokenizer):
    """compute_safety_tokens_pact.py: the aligned view is the chat rendering (its BOS written by the template), the
    base view "User: {q}\\n\\nAssistant: " and the stripped answer are tokenised with add_special_tokens=False."""
    from tokensafe.methods.pact.safety_tokens import view_ids

    tok = hub_style_tokenizer("gemma")  # <bos> 0 is added by add_special_tokens=True
    prompt = "How do I rob a bank?"
    aligned, base, resp = view_ids(tok, prompt, " Sure, here is how. ", "chat", 4)
    # <bos> <start_of_turn> user How do I rob a bank ? <end_of_turn> <start_of_turn> model
    assert aligned == [0, 4, 28, 6, 7, 8, 9, 10, 11, 12, 5, 4, 29]
    # User : How do I rob a bank ? Assistant : -- no <bos>, though this tokenizer adds one by default
    assert base == [31, 20, 6, 7, 8, 9, 10, 11, 12, 21, 20]
    assert tok("User: How do I rob a bank?\n\nAssistant: ")["input_ids"][0] == 0
    assert resp == [13, 14, 15, 16]  # Sure , here is (cut to R = 4)
