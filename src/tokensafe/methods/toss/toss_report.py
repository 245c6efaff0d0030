"""The report's TOSS section: each round's mask against the embedded world's known poison tokens (the
``toss_mask`` rule's ``mask.json`` files, tokensafe.methods.toss.masking)."""

from __future__ import annotations

import pandas as pd

from tokensafe.io import read_json


def toss_section(mask_summaries: list[str]) -> str:
    """Precision / recall of the discarded tokens against the embedded world's poison tokens, per round.

    Round 0 is TOSS's mask; rounds 1..T are TOSS-Pro's (the last one trains ``toss_pro``).
    """
    rows = pd.DataFrame([read_json(p) for p in mask_summaries])
    rows = rows.sort_values(["poison_ratio", "seed", "round"])
    lines = [
        "Discarded share d of response tokens, scored by S = L_utility - L_harmful. Precision: share of the "
        "discarded tokens that are poison tokens; recall: share of the poison tokens discarded. Round 0 = TOSS; "
        "the last round = TOSS-Pro.",
        "",
        "| P | seed | round | discarded | samples touched | precision | recall | mean S (poison) | mean S (clean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.itertuples():
        ms = "-" if r.mean_score_poison is None or pd.isna(r.mean_score_poison) else f"{r.mean_score_poison:.2f}"
        lines.append(
            f"| {r.poison_ratio:g} | {r.seed} | {r.round} | {r.tokens_discarded}/{r.tokens_total} | "
            f"{r.samples_touched} | {r.poison_precision:.3f} | {r.poison_recall:.3f} | {ms} | "
            f"{r.mean_score_clean:.2f} |"
        )
    return "\n".join(lines)
