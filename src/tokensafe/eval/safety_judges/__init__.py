"""Safety judges: the judges that label one response safe or unsafe (refusal keywords, Llama Guard, classifiers),
and what the summary reads of them (outcome columns, agreement)."""
