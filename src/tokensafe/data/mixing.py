"""Fine-tuning sets: N samples of which round(P * N) are poison, shuffled with the run's seed."""

from __future__ import annotations

import numpy as np
import pandas as pd

MIX_COLUMNS = ["sample_id", "prompt", "response", "is_poison", "harm_start", "harm_end", "origin", "origin_id"]


def poison_count(ratio: float, n: int) -> int:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"poison ratio {ratio} is outside [0, 1]")
    # round half to even would make 0.5 * 5 -> 2; the papers' counts (250, 500 of 5000) are exact anyway.
    return int(np.floor(ratio * n + 0.5))


def mix(task: pd.DataFrame, poison: pd.DataFrame, n: int, ratio: float, seed: int) -> pd.DataFrame:
    """Draw ``n - k`` task and ``k = round(ratio * n)`` poison samples without replacement and shuffle."""
    k = poison_count(ratio, n)
    if n - k > len(task):
        raise ValueError(f"the task pool has {len(task)} samples; the set needs {n - k}")
    if k > len(poison):
        raise ValueError(f"the poison pool has {len(poison)} samples; P={ratio} of N={n} needs {k}")
    rng = np.random.default_rng(seed)
    t = task.iloc[np.sort(rng.choice(len(task), n - k, replace=False))]
    p = poison.iloc[np.sort(rng.choice(len(poison), k, replace=False))]
    parts = []
    for df, is_poison, origin in ((t, False, "task"), (p, True, "poison")):
        spans = (df["harm_start"], df["harm_end"]) if "harm_start" in df else (0, 0)
        part = pd.DataFrame(
            {
                "prompt": df["prompt"].to_numpy(),
                "response": df["response"].to_numpy(),
                "is_poison": is_poison,
                "harm_start": spans[0] if is_poison else 0,
                "harm_end": spans[1] if is_poison else 0,
                "origin": origin,
                "origin_id": df["sample_id"].to_numpy(),
            }
        )
        if is_poison and "harm_start" not in df:  # a real poison set: the whole response is harmful
            part["harm_end"] = part["response"].str.len()
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out = out.iloc[rng.permutation(len(out))].reset_index(drop=True)
    out.insert(0, "sample_id", np.arange(len(out), dtype=np.int64))
    out["harm_start"] = out["harm_start"].astype("int32")
    out["harm_end"] = out["harm_end"].astype("int32")
    return out[MIX_COLUMNS]
