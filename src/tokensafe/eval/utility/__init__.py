"""Utility: the run's own task metric (answers.py) and lm-evaluation-harness benchmarks."""
