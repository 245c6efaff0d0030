"""Importing this package registers every fine-tuning method (one module per family)."""

from tokensafe.pipeline.methods import sft  # noqa: F401
