"""Token-wise constrained SFT (docs/methods.md §4): hand-computed values and gradient identities."""

import math

import pytest
import torch

from tokensafe.chat import IGNORE_INDEX as IGN
from tokensafe.methods.baselines.constrained import (
    answer_positions,
    beta_schedule,
    constrained_sft_loss,
    constrained_sft_objective_exact,
    constrained_sft_weights,
    token_logprobs,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_beta_schedule_defaults_match_spec():
    # 0-indexed position p <-> spec's 1-indexed t = p + 1.
    # p=0 (t=1): 0.1*5 = 0.5 ; p=1..4 (t=2..5): 0.1*20 = 2.0 ; p>=5 (t>5): 0.1
    got = beta_schedule(torch.arange(8))
    assert torch.allclose(got, torch.tensor([0.5, 2.0, 2.0, 2.0, 2.0, 0.1, 0.1, 0.1]))


def test_beta_schedule_edge_lengths():
    # bias_length=1: the prefix is only the first token -> [0.5, 0.1, 0.1]
    assert torch.allclose(beta_schedule(torch.arange(3), bias_length=1), torch.tensor([0.5, 0.1, 0.1]))
    # bias_length=0: no prefix at all, the official code skips the first-token factor too -> all 0.1
    assert torch.allclose(beta_schedule(torch.arange(3), bias_length=0), torch.full((3,), 0.1))
    # shape is kept: [[0, 7], [1, 5]] -> [[0.5, 0.1], [2.0, 0.1]]
    got = beta_schedule(torch.tensor([[0, 7], [1, 5]]))
    assert torch.allclose(got, torch.tensor([[0.5, 0.1], [2.0, 0.1]]))


def test_beta_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match=">= 0"):
        beta_schedule(torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="integer"):
        beta_schedule(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="beta"):
        beta_schedule(torch.arange(3), beta=0.0)


def test_weights_hand_values():
    # delta = 0                -> 2*(1 - sigmoid(0))      = 2*(1 - 1/2) = 1.0
    # beta=2,   delta = ln3/2  -> 2*(1 - sigmoid(ln 3))   = 2*(1 - 3/4) = 0.5
    # beta=0.1, delta = -10 ln3-> 2*(1 - sigmoid(-ln 3))  = 2*(1 - 1/4) = 1.5
    # beta=2,   delta = 50     -> 2*(1 - sigmoid(100)) ~ 7e-44 -> clamped to 1e-3
    logp_theta = torch.tensor([-1.0, -1.0 + LN3 / 2, -1.0 - 10 * LN3, -1.0 + 50.0], requires_grad=True)
    logp_ref = torch.full((4,), -1.0)
    beta_t = torch.tensor([0.5, 2.0, 0.1, 2.0])
    w = constrained_sft_weights(logp_theta, logp_ref, beta_t)
    assert torch.allclose(w, torch.tensor([1.0, 0.5, 1.5, 1e-3]), atol=1e-6)
    assert not w.requires_grad  # detached: the gradient flows only through log pi_theta


def test_weights_shape_mismatch_raises():
    with pytest.raises(ValueError, match="broadcast"):
        constrained_sft_weights(torch.zeros(3), torch.zeros(4), torch.ones(3))


def test_exact_objective_gradient_equals_weight():
    # d/dx [-(2/b) log sigmoid(b (x - r))] = -(2/b) * b * (1 - sigmoid(b (x - r))) = -w (unclamped), and the mean
    # over N tokens divides by N; the surrogate mean(-w * x) has the same gradient -w/N.
    torch.manual_seed(0)
    x = (torch.randn(7) - 2.0).requires_grad_(True)
    r = torch.randn(7) - 2.0
    b = beta_schedule(torch.arange(7))
    constrained_sft_objective_exact(x, r, b).backward()
    w = constrained_sft_weights(x, r, b)
    assert (w > 1e-3).all()  # the check is about the unclamped formula
    assert torch.allclose(x.grad, -w / 7, atol=1e-6)

    x2 = x.detach().clone().requires_grad_(True)
    (-(constrained_sft_weights(x2, r, b) * x2).mean()).backward()
    assert torch.allclose(x2.grad, x.grad, atol=1e-6)


def test_exact_objective_hand_value():
    # delta=0, beta=0.5: -(2/0.5) log(1/2) = 4 ln2 ; delta=ln3/2, beta=2: -(2/2) log(3/4) = ln(4/3)
    # mean = (4 ln2 + ln(4/3)) / 2
    got = constrained_sft_objective_exact(
        torch.tensor([-1.0, -1.0 + LN3 / 2]), torch.tensor([-1.0, -1.0]), torch.tensor([0.5, 2.0])
    )
    assert got.item() == pytest.approx((4 * LN2 + math.log(4 / 3)) / 2, rel=1e-6)


def test_token_logprobs_vocab3():
    # logits[0,0] = [0,0,0]       -> p(label 1) = 1/3 -> log = -ln3
    # logits[0,1] = [0,0,ln2]     -> probs [1/4,1/4,1/2] -> p(label 2) = 1/2 -> log = -ln2
    # logits[0,2] predicts beyond the sequence: dropped. Sample 1 is all prompt except a pad -> zeros.
    logits = torch.zeros(2, 3, 3)
    logits[0, 1, 2] = LN2
    labels = torch.tensor([[IGN, 1, 2], [IGN, IGN, IGN]])
    got = token_logprobs(logits, labels)
    assert got.shape == (2, 2)
    assert torch.allclose(got, torch.tensor([[-LN3, -LN2], [0.0, 0.0]]), atol=1e-6)


def test_token_logprobs_rejects_bad_labels():
    with pytest.raises(ValueError, match="token ids"):
        token_logprobs(torch.zeros(1, 3, 3), torch.tensor([[IGN, 1, 5]]))
    with pytest.raises(ValueError, match="labels must be"):
        token_logprobs(torch.zeros(1, 3, 3), torch.tensor([[IGN, 1]]))


def test_answer_positions():
    # shifted labels of [P, P, a, b, c, pad] are [P, a, b, c, pad] -> [-1, 0, 1, 2, -1]
    labels = torch.tensor([[IGN, IGN, 5, 6, 7, IGN], [IGN, 4, 4, IGN, IGN, IGN]])
    assert answer_positions(labels).tolist() == [[-1, 0, 1, 2, -1], [0, 1, -1, -1, -1]]


def _vocab3_example():
    logits = torch.zeros(1, 3, 3)
    logits[0, 1, 2] = LN2
    labels = torch.tensor([[IGN, 1, 2]])
    # answer pos 0 (beta 0.5): ref = theta = -ln3            -> delta 0        -> w = 1
    # answer pos 1 (beta 2.0): ref = -ln2 - ln3/2             -> delta = ln3/2  -> w = 2(1 - 3/4) = 0.5
    ref_logp = torch.tensor([[-LN3, -LN2 - LN3 / 2]])
    return logits, labels, ref_logp


def test_loss_vocab3_hand_value():
    logits, labels, ref_logp = _vocab3_example()
    logits.requires_grad_(True)
    loss, stats = constrained_sft_loss(logits, labels, ref_logp)
    # loss = mean(-w * logp) = (1 * ln3 + 0.5 * ln2) / 2 = (1.0986123 + 0.3465736) / 2 = 0.7225929
    assert loss.item() == pytest.approx((LN3 + 0.5 * LN2) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(0.7225929, rel=1e-6)
    assert stats["num_tokens"] == 2.0
    assert stats["mean_weight"] == pytest.approx(0.75, rel=1e-6)
    assert stats["mean_delta"] == pytest.approx(LN3 / 4, rel=1e-5)
    assert stats["frac_floor"] == 0.0
    loss.backward()
    assert logits.grad[0, 2].abs().sum() == 0  # the last position predicts nothing

    # ref_logp given as [B, T] (last column unused) and explicit answer_pos give the same loss
    ref_full = torch.cat([ref_logp, torch.tensor([[123.0]])], dim=1)
    loss2, _ = constrained_sft_loss(logits, labels, ref_full, answer_pos=torch.tensor([[0, 1, -1]]))
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-7)


def test_loss_is_token_mean_over_batch():
    # Sample 0: one answer token, delta 0 -> w = 1. Sample 1: three answer tokens with ref = -100, so
    # delta = -ln3 + 100 and beta*delta >= 0.5*98.9 -> sigmoid = 1 in float32 -> w clamped to 1e-3.
    # Every logp = -ln3 (zero logits). Token mean: (ln3 + 3*1e-3*ln3)/4 = ln3 * 1.003/4 = 0.2754785
    # (a per-sample mean would give (ln3 + 1e-3*ln3)/2 = 0.5498555 instead).
    logits = torch.zeros(2, 5, 3)
    labels = torch.tensor([[IGN, IGN, IGN, 0, IGN], [IGN, 0, 1, 2, IGN]])
    ref = torch.tensor([[0.0, 0.0, -LN3, 0.0], [-100.0, -100.0, -100.0, 0.0]])
    loss, stats = constrained_sft_loss(logits, labels, ref)
    assert loss.item() == pytest.approx(LN3 * 1.003 / 4, rel=1e-5)
    assert stats["frac_floor"] == pytest.approx(0.75)


def test_loss_gradient_matches_exact_objective():
    # With no weight at the floor, d(surrogate)/d(logits) == d(exact objective)/d(logits).
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    labels = torch.tensor([[IGN, IGN, 1, 2, 3, 4], [IGN, 0, 1, 2, IGN, IGN]])
    ref = torch.randn(2, 5) - 1.5
    a = logits.clone().requires_grad_(True)
    loss, stats = constrained_sft_loss(a, labels, ref)
    loss.backward()
    assert stats["frac_floor"] == 0.0

    b = logits.clone().requires_grad_(True)
    mask = labels[:, 1:] != IGN
    pos = answer_positions(labels)[mask]
    constrained_sft_objective_exact(token_logprobs(b, labels)[mask], ref[mask], beta_schedule(pos)).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_loss_no_answer_tokens_is_zero_and_backpropagates():
    logits = torch.randn(1, 3, 3, requires_grad=True)
    loss, stats = constrained_sft_loss(logits, torch.full((1, 3), IGN), torch.zeros(1, 2))
    loss.backward()
    assert loss.item() == 0.0 and stats["num_tokens"] == 0.0
    assert logits.grad.abs().sum() == 0


def test_loss_rejects_misaligned_ref():
    with pytest.raises(ValueError, match="ref_logp"):
        constrained_sft_loss(torch.zeros(1, 3, 3), torch.tensor([[IGN, 1, 2]]), torch.zeros(1, 1))
