"""Stage: the train/eval prompt overlap of every table the run reads, and the evaluation prompts that
``data.truncate_long_prompts`` cuts, written to ``results/data/overlap.json``.

Planning made the same overlap check on the local sources (tokensafe.data.checks); this job sees the hub and
embedded tables too, and stops the run on an overlap ``data.allow_overlap`` does not allow.
"""

from __future__ import annotations

import logging

from tokensafe.data.leakage import overlap_problems, overlap_report
from tokensafe.io import read_parquet, write_json

log = logging.getLogger("tokensafe")


def write_overlap(*, tables: dict[str, str], settings: dict, out: str, aligned: str | None = None) -> None:
    """``tables``: role -> results/data/<role>.parquet; ``settings``: ``data`` (the roles' sources and
    ``allow_overlap``) and, with ``data.truncate_long_prompts``, ``prompt_template``, ``generation``."""
    frames = {role: read_parquet(path, ["prompt"]) for role, path in tables.items()}
    report = overlap_report(settings, frames, roles=list(tables))
    for p in report["pairs"]:
        log.info(
            "data.%s / data.%s: %d evaluation prompts in training%s",
            p["train"],
            p["eval"],
            p["eval_rows"],
            " (allowed)" if p["allowed"] else "",
        )
    problems = overlap_problems(report)
    if problems:
        raise ValueError("train/eval prompt overlap:\n  - " + "\n  - ".join(problems))
    if settings["data"].get("truncate_long_prompts") and aligned is not None:
        from tokensafe.data.lengths import generation_positions, length_report, model_positions, truncation_record
        from tokensafe.train.lora import load_tokenizer

        evals = [r for r in ("task_eval", "harmful_eval") if r in frames]
        lengths = length_report(settings, frames, load_tokenizer(aligned), model_positions(aligned), roles=evals)
        report["truncated_prompts"] = truncation_record(lengths)
        report["truncated_prompts_positions"] = generation_positions(settings, model_positions(aligned))
        for role, r in report["truncated_prompts"].items():
            log.info("data.%s: %d of %d prompts cut to %d tokens", role, r["too_long"], r["rows"], r["limit"])
    write_json(report, out)
