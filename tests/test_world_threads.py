"""The world's base and aligned models train on 2 threads (config resources.world.threads) to shorten the
DAG's critical path. That is only acceptable if the thread count does not change the numbers: the same
config and seed must give the same models on a 1-core laptop and a 2-core CI machine.

The claim is about the jobs, which run under the pinned CPU numerics (``cpu_numerics: avx2``: MKL's strict
CNR mode, whose GEMMs do not depend on the thread count), so the training runs in a subprocess with that
environment, whatever kernels the test process itself was started with (under MKL's COMPATIBLE branch, for
one, 1 and 2 threads do differ)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tokensafe.runtime.numerics import pin_cpu_numerics
from tokensafe.train.batching import make_example
from tokensafe.train.lm_losses import lm_loss
from tokensafe.train.loop import TrainSettings, train

from tiny_models import tiny_llama


def _train(threads: int, steps: int = 6) -> dict[str, torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = tiny_llama(300, hidden=128, intermediate=256, heads=4).train()
        rng = np.random.default_rng(0)
        examples = [
            make_example(ids, ids) for ids in (rng.integers(1, 300, size=rng.integers(20, 48)) for _ in range(64))
        ]
        if steps:
            train(
                model,
                examples,
                lm_loss,
                TrainSettings(lr=3e-3, batch_size=16, steps=steps, seed=0),
                pad_id=0,
                log=lambda *_: None,
            )
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    finally:
        torch.set_num_threads(before)


def _compare() -> str:
    one, two = _train(1), _train(2)
    assert one.keys() == two.keys()
    differ = [name for name in one if not torch.equal(one[name], two[name])]
    moved = not torch.equal(_train(1, steps=0)["lm_head.weight"], one["lm_head.weight"])
    return f"differ={','.join(differ) or '-'} moved={moved}"


def test_world_training_is_bitwise_the_same_on_1_and_2_threads():
    env = dict(os.environ)
    pin_cpu_numerics("avx2", env)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    out = (
        subprocess.run(
            [sys.executable, "-c", "from test_world_threads import _compare; print(_compare())"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    # Not vacuous: the six steps moved the weights away from their initial values.
    assert out == "differ=- moved=True"
