"""Per-token NLL (docs/methods.md §1.3): chunked vs full logits, HF/peft plumbing, the long loss table."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from tokensafe.train.loss_dumps import chunked_token_nll, loss_table, naive_token_nll, per_token_nll


def full_logits_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Independent reference: out[:, t] = CE(logits[:, t-1], ids[:, t]), out[:, 0] = 0."""
    out = torch.zeros(input_ids.shape)
    for t in range(1, input_ids.shape[1]):
        out[:, t] = F.cross_entropy(logits[:, t - 1].float(), input_ids[:, t], reduction="none")
    return out


def test_chunked_nll_hand_example():
    # Identity head, so hidden IS the logits (V = 3). Row: ids = [2, 0, 1].
    # out[0] = 0 (no context).
    # out[1] from logits [0, 0, 0] -> uniform, -log(1/3) = log 3 = 1.098612
    # out[2] from logits [ln2, 0, 0] -> P = [2/4, 1/4, 1/4]; target 1 -> -log(1/4) = log 4 = 1.386294
    hidden = torch.tensor([[[0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0], [5.0, 5.0, 5.0]]])
    ids = torch.tensor([[2, 0, 1]])
    for chunk in (1, 2, 5):
        out = chunked_token_nll(hidden, lambda h: h, ids, chunk_size=chunk)
        assert out.dtype == torch.float32 and out.shape == (1, 3)
        torch.testing.assert_close(out, torch.tensor([[0.0, math.log(3), math.log(4)]]))


@pytest.mark.parametrize("chunk", [1, 3, 7, 8, 1000])  # 8 = B*(T-1) exactly, 1000 > N
def test_chunked_matches_full_logits(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 4)
    head = torch.nn.Linear(4, 6, bias=False)
    ids = torch.randint(0, 6, (2, 5))
    calls: list[int] = []
    head.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    out = chunked_token_nll(hidden, head, ids, chunk_size=chunk)
    # The head never sees more than chunk_size positions: 2 x 4 = 8 positions -> ceil(8 / chunk) calls.
    assert max(calls) <= chunk and len(calls) == math.ceil(8 / chunk) and sum(calls) == 8
    torch.testing.assert_close(out, full_logits_nll(head(hidden), ids))
    assert (out[:, 0] == 0).all()


def test_chunked_bad_input():
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_token_nll(torch.zeros(1, 3, 2), lambda h: h, torch.zeros(1, 3, dtype=torch.long), chunk_size=0)
    with pytest.raises(ValueError, match="input_ids"):
        chunked_token_nll(torch.zeros(1, 3, 2), lambda h: h, torch.zeros(1, 4, dtype=torch.long))


@pytest.fixture(scope="module")
def tiny_llama():
    from tiny_models import tiny_llama

    return tiny_llama(50, hidden=32, intermediate=64)


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(1, 50, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # right padding
    mask[2, :2] = 0  # left padding
    return ids, mask


def _scored(mask: torch.Tensor) -> torch.Tensor:
    # Scored = this token and the one before it are real.
    s = torch.zeros_like(mask, dtype=torch.bool)
    s[:, 1:] = mask[:, 1:].bool() & mask[:, :-1].bool()
    return s


@pytest.mark.parametrize("chunk", [1, 4, 1024])
def test_per_token_nll_matches_full_logits(tiny_llama, chunk):
    ids, mask = _batch()
    with torch.no_grad():
        logits = tiny_llama(input_ids=ids, attention_mask=mask).logits
    expected = full_logits_nll(logits, ids) * _scored(mask)
    got = per_token_nll(tiny_llama, ids, mask, chunk_size=chunk)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(naive_token_nll(tiny_llama, ids, mask), expected, atol=1e-5, rtol=1e-5)
    # Padding targets and the first real token of the left-padded row get 0; real tokens get > 0.
    assert got[1, 5:].eq(0).all() and got[2, :3].eq(0).all()
    assert got[0, 1:].gt(0).all()


def test_per_token_nll_never_calls_full_model_or_full_head(tiny_llama):
    ids, mask = _batch()
    rows: list[int] = []
    hook = tiny_llama.lm_head.register_forward_hook(lambda m, inp, out: rows.append(inp[0].reshape(-1, 32).shape[0]))
    try:
        tiny_llama.train()  # per_token_nll must score in eval mode and restore the caller's mode
        per_token_nll(tiny_llama, ids, mask, chunk_size=5)
    finally:
        hook.remove()
    assert tiny_llama.training
    tiny_llama.eval()
    # 3 rows x 6 shifted positions = 18 -> chunks of 5,5,5,3; never the full [3, 7] batch.
    assert rows == [5, 5, 5, 3]


def test_per_token_nll_through_peft_lora(tiny_llama):
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(2)
    # init_lora_weights=False gives a non-zero B, so the adapter really changes the logits.
    peft_model = get_peft_model(
        copy.deepcopy(tiny_llama),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    ids, mask = _batch()
    with torch.no_grad():
        logits = peft_model(input_ids=ids, attention_mask=mask).logits
        base_logits = tiny_llama(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(logits, base_logits, atol=1e-4)
    expected = full_logits_nll(logits, ids) * _scored(mask)
    torch.testing.assert_close(per_token_nll(peft_model, ids, mask, chunk_size=4), expected, atol=1e-5, rtol=1e-5)


def test_loss_table_rows_and_types():
    # Row 0 (sample 10): right-padded, 3 real tokens [5, 6, 7], response = last two.
    # Row 1 (sample 11): left-padded, 2 real tokens [8, 9], response = last one.
    ids = np.array([[5, 6, 7, 0], [0, 0, 8, 9]])
    attn = np.array([[1, 1, 1, 0], [0, 0, 1, 1]])
    resp = np.array([[0, 1, 1, 0], [0, 0, 0, 1]], dtype=bool)
    losses = torch.tensor([[0.0, 1.5, 2.25, 9.0], [9.0, 9.0, 0.0, 0.75]])
    table = loss_table(torch.tensor([10, 11]), torch.tensor(ids), torch.tensor(resp), losses, attention_mask=attn)
    assert table.schema == pa.schema(
        [
            ("sample_id", pa.int64()),
            ("position", pa.int32()),
            ("token_id", pa.int32()),
            ("loss", pa.float32()),
            ("is_response", pa.bool_()),
        ]
    )
    assert table.to_pydict() == {
        "sample_id": [10, 10, 10, 11, 11],
        "position": [0, 1, 2, 0, 1],  # index within the unpadded sample, whatever the padding side
        "token_id": [5, 6, 7, 8, 9],
        "loss": [0.0, 1.5, 2.25, 0.0, 0.75],
        "is_response": [False, True, True, False, True],
    }
    half = loss_table([10, 11], ids, resp, losses.numpy(), dtype="float16", attention_mask=attn)
    assert half.schema.field("loss").type == pa.float16()
    assert half.column("loss").to_numpy().tolist() == [0.0, 1.5, 2.25, 0.0, 0.75]  # exact in fp16
    assert loss_table([10, 11], ids, resp, losses).num_rows == 8  # no mask -> every position is a token


def test_loss_table_bad_input():
    ids = np.zeros((2, 3), dtype=np.int64)
    ok = np.zeros((2, 3), dtype=bool)
    with pytest.raises(ValueError, match="one id per row"):
        loss_table([1], ids, ok, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="losses"):
        loss_table([1, 2], ids, ok, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="padding"):
        loss_table(
            [1, 2], ids, np.ones((2, 3), bool), np.zeros((2, 3)), attention_mask=np.array([[1, 1, 0], [1, 1, 1]])
        )
    with pytest.raises(ValueError, match="dtype"):
        loss_table([1, 2], ids, ok, np.zeros((2, 3)), dtype="bfloat16")
