"""Importing this package registers every fine-tuning method (one module per family)."""

from tokensafe.pipeline.methods import baselines, pact, sft, toss  # noqa: F401
