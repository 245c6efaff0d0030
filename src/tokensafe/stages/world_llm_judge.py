"""Stage: train the embedded world's LLM-judge stand-in (:mod:`tokensafe.world.llm_judge`) on the world's guard
and task tables, and save it."""

from __future__ import annotations

from pathlib import Path

from tokensafe.io import atomic_path, read_parquet, write_json
from tokensafe.train.checkpoint import checkpointed
from tokensafe.world.llm_judge import train_judge


def build_judge(
    *, data_dir: str, out_dir: str, arch: dict, train_cfg: dict, seed: int, vocab_size: int, n_examples: int
) -> None:
    guard = read_parquet(Path(data_dir) / "guard_train.parquet", ["prompt", "response", "kind"])
    task = read_parquet(Path(data_dir) / "task_train.parquet", ["prompt", "response", "reference"])
    settings = {"arch": arch, "train_cfg": train_cfg, "seed": seed, "vocab_size": vocab_size, "n_examples": n_examples}
    with checkpointed(out_dir, settings=settings, inputs=[data_dir]) as ck:
        model, tok, info = train_judge(guard, task, checkpoints=ck, **settings)
        with atomic_path(out_dir) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            write_json(info, Path(tmp) / "tokensafe_model.json")
