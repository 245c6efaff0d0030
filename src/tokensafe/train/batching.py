"""Examples and padded batches for causal-LM training.

An example is a dict with ``input_ids`` and ``labels`` (1-D int arrays of equal length, labels
unshifted with -100 on positions that carry no loss) plus optional per-token extras (for instance
cached reference logits ``[T, K]``) that a method's loss needs. Extras are padded with zeros.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from tokensafe.chat import IGNORE_INDEX


def make_example(input_ids: Sequence[int], labels: Sequence[int] | np.ndarray, **extras: Any) -> dict[str, Any]:
    ids = np.asarray(input_ids, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    if ids.shape != lab.shape:
        raise ValueError(f"input_ids and labels differ in length: {ids.shape} vs {lab.shape}")
    return {"input_ids": ids, "labels": lab, **extras}


def collate(examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into tensors; ``attention_mask`` marks real tokens."""
    n = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, Any] = {
        "input_ids": torch.full((len(examples), n), pad_id, dtype=torch.long),
        "labels": torch.full((len(examples), n), IGNORE_INDEX, dtype=torch.long),
        "attention_mask": torch.zeros((len(examples), n), dtype=torch.long),
    }
    extra_keys = [k for k in examples[0] if k not in ("input_ids", "labels")]
    for k in extra_keys:
        first = np.asarray(examples[0][k])
        if first.ndim == 0:  # per-example scalar
            batch[k] = torch.as_tensor(np.stack([np.asarray(e[k]) for e in examples]))
            continue
        shape = (len(examples), n, *first.shape[1:])
        batch[k] = torch.zeros(shape, dtype=torch.from_numpy(first[:0].copy()).dtype)
    for i, e in enumerate(examples):
        m = len(e["input_ids"])
        batch["input_ids"][i, :m] = torch.from_numpy(e["input_ids"])
        batch["labels"][i, :m] = torch.from_numpy(e["labels"])
        batch["attention_mask"][i, :m] = 1
        for k in extra_keys:
            v = np.asarray(e[k])
            if v.ndim > 0:
                batch[k][i, : len(v)] = torch.from_numpy(v.copy())
    return batch
