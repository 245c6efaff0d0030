from tokensafe.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.logs) covers them

import pandas as pd

from tokensafe.io import read_parquet
from tokensafe.report import (comparisons_section, interval_section, no_answer_section, pact_conflicts_section,
                               pact_ladder_section, render, safety_tokens_section, toss_section)

inp = snakemake.input
summary = read_parquet(inp.summary)
sections = [("Uncertainty: 95 % intervals over seeds and prompts", interval_section(pd.read_csv(inp.by_method))),
            ("Is the difference beyond the noise?", comparisons_section(pd.read_csv(inp.comparisons))),
            ("Task answers without an extractable answer", no_answer_section(summary))]
if inp.toss_masks:
    sections.append(("TOSS masks against the known poison tokens", toss_section(list(inp.toss_masks))))
if inp.safety_tokens:
    sections.append(("PACT safety tokens", safety_tokens_section(inp.safety_tokens[0])))
if inp.pact_conflicts:
    sections.append(("PACT: where the weighted KL fights the cross-entropy", pact_conflicts_section(list(inp.pact_conflicts))))
ladder = pact_ladder_section(summary)
if ladder:
    sections.append(("PACT ablation ladder (Table 5 layout)", ladder))
render(summary, snakemake.output.md, snakemake.output.png, sections)
