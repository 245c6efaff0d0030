"""tokensafe: safe LLM fine-tuning methods (TOSS, TOSS-Pro, PACT, baselines) and their evaluation."""

__version__ = "0.1.0"
