"""The world's base and aligned models train on 2 threads (config resources.world.threads) to shorten the
DAG's critical path. That is only acceptable if the thread count does not change the numbers: the same
config and seed must give the same models on a 1-core laptop and a 2-core CI machine."""

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tokensafe.train.batching import make_example
from tokensafe.train.loop import TrainSettings, train
from tokensafe.train.objectives import lm_loss


def _train(threads: int, steps: int = 6) -> dict[str, torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=300, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
        model = LlamaForCausalLM(cfg)
        rng = np.random.default_rng(0)
        examples = [make_example(ids, ids) for ids in (rng.integers(1, 300, size=rng.integers(20, 48)) for _ in range(64))]
        if steps:
            train(model, examples, lm_loss, TrainSettings(lr=3e-3, batch_size=16, steps=steps, seed=0), pad_id=0, log=lambda *_: None)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    finally:
        torch.set_num_threads(before)


def test_world_training_is_bitwise_the_same_on_1_and_2_threads():
    one, two = _train(1), _train(2)
    assert one.keys() == two.keys()
    for name in one:
        assert torch.equal(one[name], two[name]), name
    # Not vacuous: the six steps moved the weights away from their initial values.
    init = _train(1, steps=0)
    assert not torch.equal(init["lm_head.weight"], one["lm_head.weight"])
