"""Checkpoints of the training loop (tokensafe.train.checkpoint, tokensafe.train.loop): a run interrupted at any step
and resumed ends with the uninterrupted run's weights bit for bit; the file is written atomically; a checkpoint of
another run is discarded. The kills of real fine-tune jobs through Snakemake: tests/test_e2e_checkpoint.py."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tokensafe.runtime.preemption import (
    DEFAULT_EVERY_MINUTES,
    ENV_CHECKPOINT,
    STOPPED_STATUS,
    CheckpointPolicy,
    policy_of,
    read_policy,
)
from tokensafe.train.batching import make_example
from tokensafe.train.checkpoint import Checkpoints, atomic_write, checkpointed, location
from tokensafe.train.lm_losses import lm_loss
from tokensafe.train.loop import TrainSettings, train
from tokensafe.train.lora import add_lora

from tiny_models import tiny_llama

REPO = Path(__file__).resolve().parents[1]


class Crash(Exception):
    pass


def examples(n: int = 22, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [make_example(ids, ids) for ids in (rng.integers(1, 50, size=rng.integers(5, 12)) for _ in range(n))]


def noisy_loss(calls: list[int], crash_at: int | None = None):
    """lm_loss plus a term from Python's and numpy's generators (so that their states must be restored too); raises
    Crash on micro-batch ``crash_at`` (1-based), as a kill in the middle of a step would end the run."""

    def loss_fn(model, batch):
        calls[0] += 1
        if crash_at is not None and calls[0] == crash_at:
            raise Crash
        loss, stats = lm_loss(model, batch)
        jitter = 1e-3 * (random.random() + float(np.random.rand()))
        return loss * (1 + jitter), {**stats, "jitter": jitter}

    return loss_fn


def lora_model(dropout: float = 0.2):
    model = tiny_llama(50, hidden=16, intermediate=32)
    return add_lora(model, 4, 8, dropout, ["q_proj", "v_proj"], seed=3)


def run(settings: TrainSettings, ck: Checkpoints | None, crash_at: int | None = None):
    model = lora_model()
    random.seed(5)
    np.random.seed(5)
    calls = [0]
    history = train(
        model, examples(), noisy_loss(calls, crash_at), settings, pad_id=0, log=lambda *_: None, checkpoints=ck
    )
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return weights, [{k: v for k, v in row.items() if k != "elapsed_s"} for row in history], calls[0]


SCHEDULES = [
    # 22 examples, batch 4 (5 batches per epoch, the last 2 dropped): grad_accum 2 closes each epoch with a
    # one-batch step (accelerate syncs at the end of the loader), so steps 3, 6, 9, ... end epochs.
    dict(schedule="constant", grad_accum=2, steps=8, warmup_steps=2),
    dict(schedule="cosine", grad_accum=2, steps=8, warmup_steps=0),
    dict(schedule="step_per_epoch", grad_accum=3, steps=7, step_gamma=0.5),
    dict(schedule="cosine", grad_accum=1, epochs=1.6),
]


@pytest.mark.parametrize("recipe", SCHEDULES, ids=lambda r: f"{r['schedule']}-accum{r['grad_accum']}")
def test_a_resumed_run_ends_with_the_uninterrupted_weights_bit_for_bit(tmp_path, recipe):
    settings = TrainSettings(lr=5e-2, batch_size=4, log_every=3, seed=1, **recipe)
    whole, whole_history, micro = run(settings, None)
    # Crash at every micro-batch k, with a checkpoint after every step: the resumes start from every step (mid-epoch,
    # at an epoch's end), into an accumulation, and must end where the whole run ends.
    resumed_from = set()
    for crash_at in range(1, micro + 1):
        ck = Checkpoints(tmp_path / f"c{crash_at}", {"settings": "s"}, CheckpointPolicy(every_steps=1, every_minutes=0))
        with pytest.raises(Crash):
            run(settings, ck, crash_at)
        assert ck.file.exists() == (crash_at > settings.grad_accum)  # the first step (>= 1 micro-batch) was saved
        step = torch.load(ck.file, weights_only=True)["step"] if ck.file.exists() else 0
        if step in resumed_from:
            continue  # the same checkpoint as a crash a micro-batch earlier
        resumed_from.add(step)
        resumed, history, _ = run(settings, ck)
        assert history == whole_history, crash_at
        for name, w in whole.items():
            assert torch.equal(resumed[name], w), (crash_at, name)
    assert resumed_from == set(range(settings.total_steps(22)))
    # Not vacuous: training moved the weights, and an unrestored generator would give other ones.
    assert not torch.equal(whole[next(n for n in whole if "lora_B" in n)], torch.zeros_like(whole[next(iter(whole))]))


def test_a_whole_model_resumes_bit_for_bit(tmp_path):
    """The world's models train every parameter (tied input and output embeddings, attention dropout)."""
    settings = TrainSettings(lr=5e-3, batch_size=4, steps=5, grad_accum=2, schedule="cosine", seed=2)

    def whole_model_run(ck, crash_at=None):
        model = tiny_llama(50, tie_word_embeddings=True, attention_dropout=0.3).train()
        random.seed(5)
        np.random.seed(5)
        calls = [0]
        train(model, examples(), noisy_loss(calls, crash_at), settings, pad_id=0, log=lambda *_: None, checkpoints=ck)
        return model.state_dict()

    whole = whole_model_run(None)
    ck = Checkpoints(tmp_path / "c", {}, CheckpointPolicy(every_steps=1, every_minutes=0))
    with pytest.raises(Crash):
        whole_model_run(ck, crash_at=6)  # within step 3 (the second of the second epoch)
    resumed = whole_model_run(ck)
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert not torch.equal(
        whole["lm_head.weight"], tiny_llama(50, tie_word_embeddings=True).state_dict()["lm_head.weight"]
    )


def test_resume_skips_the_steps_already_done(tmp_path):
    settings = TrainSettings(lr=5e-2, batch_size=4, steps=6, seed=1)
    ck = Checkpoints(tmp_path / "c", {}, CheckpointPolicy(every_steps=2, every_minutes=0))
    with pytest.raises(Crash):
        run(settings, ck, crash_at=6)  # after the checkpoint of step 4
    lines = []
    model = lora_model()
    calls = [0]
    train(model, examples(), noisy_loss(calls), settings, pad_id=0, log=lines.append, checkpoints=ck)
    assert calls[0] == 2  # steps 5 and 6 only
    assert any(line == f"resumed from checkpoint {ck.file} at step 4 of 6" for line in lines)


def test_a_checkpoint_of_other_settings_or_examples_is_discarded(tmp_path):
    settings = TrainSettings(lr=5e-2, batch_size=4, steps=4, seed=1)
    policy = CheckpointPolicy(every_steps=1, every_minutes=0)
    ck = Checkpoints(tmp_path / "c", {"settings": {"lr": 1}}, policy)
    with pytest.raises(Crash):
        run(settings, ck, crash_at=3)
    saved = ck.file.read_bytes()
    for other, what in [
        (Checkpoints(ck.folder, {"settings": {"lr": 2}}, policy), "job settings"),
        (Checkpoints(ck.folder, {"settings": {"lr": 1}, "inputs": [str(tmp_path / "in.txt")]}, policy), "input files"),
    ]:
        ck.file.write_bytes(saved)
        lines, calls = [], [0]
        train(lora_model(), examples(), noisy_loss(calls), settings, pad_id=0, log=lines.append, checkpoints=other)
        assert calls[0] == 4  # from step 0
        assert (
            f"checkpoint {ck.file}: trained from other {what} than this run; discarded, training from step 0" in lines
        )
    # other loop settings, other examples
    ck.file.write_bytes(saved)
    lines = []
    train(lora_model(), examples(seed=9), lm_loss, settings, pad_id=0, log=lines.append, checkpoints=ck)
    assert any("trained from other examples, loss than this run; discarded" in line for line in lines), lines


def test_an_input_file_rebuilt_since_the_checkpoint_discards_it(tmp_path):
    data = tmp_path / "data.parquet"
    data.write_bytes(b"x" * 10)
    ck = Checkpoints(tmp_path / "c", {"settings": 1, "inputs": [str(data)]})
    before = ck.fingerprint(loop="same")
    os.utime(data, ns=(0, data.stat().st_mtime_ns + 10**9))
    after = ck.fingerprint(loop="same")
    assert {k for k in before if before[k] != after[k]} == {"input files"}


def test_save_load_round_trip_and_removal(tmp_path):
    ck = Checkpoints(tmp_path / "out.checkpoint", {"settings": 1})
    state = {"step": 3, "t": torch.arange(4.0), "history": [{"step": 1, "loss": 0.5}]}
    fp = {"a": "1"}
    ck.save(state, fp)
    got = ck.load(fp, log=lambda *_: None)
    assert got["step"] == 3 and torch.equal(got["t"], torch.arange(4.0)) and got["history"] == state["history"]
    assert got["fingerprint"] == fp
    lines = []
    ck.file.write_bytes(b"not a checkpoint")
    assert ck.load(fp, lines.append) is None and not ck.folder.exists()
    assert lines[0].startswith(f"checkpoint {ck.file}: unreadable (")


def test_checkpointed_removes_the_folder_on_success_only(tmp_path):
    out = tmp_path / "adapter"
    assert location(out) == tmp_path / "adapter.checkpoint"
    with checkpointed(out, settings={}) as ck:
        ck.save({"step": 1}, {})
    assert not location(out).exists()
    with pytest.raises(Crash), checkpointed(out, settings={}) as ck:
        ck.save({"step": 1}, {})
        raise Crash
    assert ck.file.exists()


# A process killed while it writes the checkpoint file: the writer is patched to write half the bytes, flush them to
# disk and SIGKILL itself (what a second kill during a preemption's checkpoint does).
DIE_IN_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import tokensafe.train.checkpoint as C

    def half_then_die(f, data):
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    C._write_all = half_then_die
    C.atomic_write(Path(sys.argv[1]), b"new" * 1000)
    """
)


def test_a_kill_during_the_write_leaves_the_previous_checkpoint(tmp_path):
    target = tmp_path / "state.pt"
    atomic_write(target, b"old" * 1000)
    proc = subprocess.run([sys.executable, "-c", DIE_IN_WRITE, str(target)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    strays = list(tmp_path.glob(".state.pt.tmp-*"))
    assert len(strays) == 1 and strays[0].stat().st_size == 1500  # the half-written temporary file is there
    assert target.read_bytes() == b"old" * 1000
    atomic_write(target, b"next")  # the next write removes the stray file
    assert target.read_bytes() == b"next" and list(tmp_path.glob(".state.pt.tmp-*")) == []


def test_sigterm_saves_at_the_next_step_and_exits_143(tmp_path):
    settings = TrainSettings(lr=5e-2, batch_size=4, steps=8, seed=1)
    whole, whole_history, _ = run(settings, None)
    ck = Checkpoints(tmp_path / "c", {}, CheckpointPolicy(every_steps=0, every_minutes=0))  # only SIGTERM saves
    calls = [0]
    inner = noisy_loss(calls)

    def terminated_on_third_batch(model, batch):
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return inner(model, batch)

    lines = []
    random.seed(5)
    np.random.seed(5)
    with pytest.raises(SystemExit) as stopped:
        train(lora_model(), examples(), terminated_on_third_batch, settings, pad_id=0, log=lines.append, checkpoints=ck)
    assert stopped.value.code == STOPPED_STATUS
    assert lines[-1] == (
        f"SIGTERM: checkpoint of step 3 of 8 written to {ck.file}; exiting with status 143 (a rerun resumes from it)"
    )
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the loop's only while it runs
    resumed, history, _ = run(settings, ck)
    assert history == whole_history
    assert all(torch.equal(resumed[n], whole[n]) for n in whole)


def test_the_policy_reaches_jobs_through_the_environment():
    assert read_policy({}) == CheckpointPolicy(0, DEFAULT_EVERY_MINUTES)
    policy = policy_of({"checkpoint": {"every_steps": 50, "every_minutes": 0}})
    assert read_policy({ENV_CHECKPOINT: policy.to_env()}) == CheckpointPolicy(50, 0.0)
    with pytest.raises(ValueError, match="TOKENSAFE_CHECKPOINT='x': expected JSON like"):
        read_policy({ENV_CHECKPOINT: "x"})


def test_every_training_call_of_the_package_passes_its_job_checkpoints():
    """Every call of the loop (train), and of the world's wrappers around it (fit, train_judge), passes
    ``checkpoints=`` from its stage's ``checkpointed(<output>)``: the fine-tunes, TOSS's reference models and rounds,
    and the world's base, aligned, guard and judge models."""
    import ast

    calls = {}
    for path in sorted((REPO / "src" / "tokensafe").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name in ("fit", "train_judge") or (name == "train" and isinstance(node.func, ast.Name)):
                    keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                    calls.setdefault(str(path.relative_to(REPO / "src")), []).append(keywords.get("checkpoints"))
    assert calls == {
        "tokensafe/methods/toss/reference_models.py": ["ck"],
        "tokensafe/stages/finetune.py": ["ck"],
        "tokensafe/stages/world_llm_judge.py": ["ck"],
        "tokensafe/stages/world_models.py": ["ck", "ck", "ck"],  # base, aligned, guard
        "tokensafe/world/llm_judge.py": ["checkpoints"],
        "tokensafe/world/models.py": ["checkpoints"],
    }
    for path in calls:
        if "stages/" in path or "toss/" in path:
            assert (REPO / "src" / path).read_text().count("with checkpointed(out_dir,") == len(calls[path]), path
