"""The fine-tuning set as training examples, through the shared tokenisation function (docs/methods.md §A12)."""

from __future__ import annotations

from tokensafe.chat import encode_pair
from tokensafe.train.batching import make_example


def encode_dataset(tok, df, template: str, max_length: int) -> list[dict]:
    """Examples through the shared tokenisation function (docs/methods.md §A12), in the order of ``df``."""
    out = []
    for prompt, response in zip(df["prompt"], df["response"]):
        enc = encode_pair(tok, prompt, response, template, max_length)
        out.append(make_example(enc.input_ids, enc.labels()))
    return out
