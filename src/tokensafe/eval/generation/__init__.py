"""Generation: greedy / sampled decoding with transformers or vLLM, and the shared vLLM engine."""
