"""The LLM judge: published pairwise and rubric prompts asked of an OpenAI-compatible endpoint (its client, and
the local server the workflow starts)."""
