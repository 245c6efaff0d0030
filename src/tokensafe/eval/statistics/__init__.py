"""Statistics: intervals over seeds and prompts, paired differences, noise verdicts, the summary's comparisons."""
