"""Evaluation, one subpackage per concern: generation, safety_judges, llm_judge, utility, statistics."""
