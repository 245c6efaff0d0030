"""Selective (TOSS, §A11) and plain SFT cross-entropy, checked by hand on a vocabulary of 3."""

from __future__ import annotations

import math

import pytest
import torch

from tokensafe.train.lm_losses import response_ce_loss, selective_ce_loss

LN2, LN3 = math.log(2), math.log(3)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """B=3, T=3, V=3. logits[:, t] predicts labels[:, t+1].

    sample 0: labels [-100, 0, 2]
        logits[0,0] = [0, 0, 0]     -> target 0, P = 1/3, CE = ln 3
        logits[0,1] = [ln2, 0, 0]   -> target 2, P = 1/4, CE = ln 4
        per-sample mean = (ln 3 + ln 4) / 2 = ln(12)/2 = 1.242453
    sample 1: labels [-100, -100, 1] (token 1 is prompt, or was discarded)
        logits[1,0] = [1, 2, 3]     -> masked
        logits[1,1] = [0, ln3, 0]   -> target 1, P = 3/5, CE = ln(5/3) = 0.510826
    sample 2: labels all -100 -> no retained token: contributes nothing, no NaN.
    logits[:, 2] predicts nothing.
    """
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0], [LN2, 0.0, 0.0], [9.0, 9.0, 9.0]],
            [[1.0, 2.0, 3.0], [0.0, LN3, 0.0], [9.0, 9.0, 9.0]],
            [[4.0, 0.0, 0.0], [0.0, 5.0, 0.0], [9.0, 9.0, 9.0]],
        ],
        requires_grad=True,
    )
    labels = torch.tensor([[-100, 0, 2], [-100, -100, 1], [-100, -100, -100]])
    return logits, labels


def test_selective_value_by_hand():
    logits, labels = batch()
    # Mean over the 2 samples with tokens: (ln(12)/2 + ln(5/3)) / 2 = (1.242453 + 0.510826) / 2 = 0.876639.
    expected = (math.log(12) / 2 + math.log(5 / 3)) / 2
    assert selective_ce_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    # Dropping the empty sample 2 changes nothing: it is not in the denominator.
    assert selective_ce_loss(logits[:2], labels[:2]).item() == pytest.approx(expected, abs=1e-6)


def test_response_ce_value_by_hand():
    logits, labels = batch()
    # Token mean over the batch's 3 labelled positions: (ln 3 + ln 4 + ln(5/3)) / 3 = ln(20)/3 = 0.998577.
    assert response_ce_loss(logits, labels).item() == pytest.approx(math.log(20) / 3, abs=1e-6)


def test_selective_gradient_is_zero_on_masked_positions():
    logits, labels = batch()
    selective_ce_loss(logits, labels).backward()
    grad = logits.grad
    # Masked: sample 1 position 0 (prompt/discarded target), all of sample 2, and every last position.
    for b, t in [(1, 0), (2, 0), (2, 1), (0, 2), (1, 2), (2, 2)]:
        assert torch.equal(grad[b, t], torch.zeros(3)), (b, t)
    # Sample 1, position 1: weight 1/(1 token * 2 samples); (softmax - onehot) = [0.2, -0.4, 0.2] -> [0.1, -0.2, 0.1].
    torch.testing.assert_close(grad[1, 1], torch.tensor([0.1, -0.2, 0.1]))
    # Sample 0, position 0: weight 1/(2 tokens * 2 samples) = 1/4; ([1/3]*3 - [1,0,0]) / 4.
    torch.testing.assert_close(grad[0, 0], torch.tensor([-2 / 3, 1 / 3, 1 / 3]) / 4)


def test_response_ce_gradient_is_zero_on_masked_positions():
    logits, labels = batch()
    response_ce_loss(logits, labels).backward()
    assert torch.equal(logits.grad[1, 0], torch.zeros(3)) and torch.equal(logits.grad[2], torch.zeros(3, 3))
    # Token mean: weight 1/3 per labelled token -> [0.2, -0.4, 0.2] / 3.
    torch.testing.assert_close(logits.grad[1, 1], torch.tensor([0.2, -0.4, 0.2]) / 3)


@pytest.mark.parametrize("loss_fn", [selective_ce_loss, response_ce_loss])
def test_no_retained_token_gives_attached_zero(loss_fn):
    logits, labels = batch()
    loss = loss_fn(logits[2:], labels[2:])
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_selective_differs_from_token_mean_and_matches_it_for_one_sample():
    logits, labels = batch()
    # With one sample the two normalisations agree: both are (ln 3 + ln 4) / 2.
    one = selective_ce_loss(logits[:1], labels[:1]).item()
    assert one == pytest.approx(response_ce_loss(logits[:1], labels[:1]).item()) == pytest.approx(math.log(12) / 2)
    # With unequal token counts they differ (0.876639 vs 0.998577).
    assert selective_ce_loss(logits, labels).item() < response_ce_loss(logits, labels).item() - 0.1


def test_half_precision_logits_use_float32_ce():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.randint(0, 5, (2, 4))
    labels[0, :2] = -100
    ref = selective_ce_loss(logits, labels)
    got = selective_ce_loss(logits.bfloat16(), labels)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), abs=3e-2)  # only the bf16 rounding of the inputs differs


def test_shape_errors():
    with pytest.raises(ValueError, match=r"logits \[B, T, V\]"):
        selective_ce_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
