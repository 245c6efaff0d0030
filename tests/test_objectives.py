"""The training-loop adapters in tokensafe.train.objectives on a tiny Llama."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tokensafe.train.objectives import labelled_lm_loss, lm_loss


def tiny_batch():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2, intermediate_size=32, max_position_embeddings=32))
    ids = torch.randint(0, 50, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # a right-padded row
    labels = torch.full_like(ids, -100)
    labels[0, 6:] = ids[0, 6:]  # verdict-like tails of different lengths
    labels[1, 4:7] = ids[1, 4:7]
    labels[2, 1:] = ids[2, 1:]  # a full-sequence row
    return model, {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_labelled_lm_loss_equals_the_full_logits_loss_and_gradients():
    model, batch = tiny_batch()
    grads = []
    for fn in (lm_loss, labelled_lm_loss):
        model.zero_grad()
        loss, stats = fn(model, batch)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (a, ga), (b, gb) = grads
    assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(ga, gb))


def test_labelled_lm_loss_by_hand():
    """Token mean of -log softmax(logits at t)[label t+1] over the 4 + 3 + 9 labelled positions."""
    model, batch = tiny_batch()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
        terms = [-logits[i, t - 1, batch["labels"][i, t]] for i in range(3) for t in range(1, 10)
                 if batch["labels"][i, t] != -100]
        assert len(terms) == 4 + 3 + 9
        loss, _ = labelled_lm_loss(model, batch)
    assert torch.isclose(loss, torch.stack(terms).mean(), atol=1e-6)
