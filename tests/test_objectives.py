"""The training-loop adapters in tokensafe.train.lm_losses on a tiny Llama."""

import torch

from tokensafe.train.lm_losses import labelled_lm_loss, lm_loss

from tiny_models import tiny_llama


def tiny_batch():
    model = tiny_llama(50, max_positions=32).train()
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
        terms = [
            -logits[i, t - 1, batch["labels"][i, t]]
            for i in range(3)
            for t in range(1, 10)
            if batch["labels"][i, t] != -100
        ]
        assert len(terms) == 4 + 3 + 9
        loss, _ = labelled_lm_loss(model, batch)
    assert torch.isclose(loss, torch.stack(terms).mean(), atol=1e-6)
