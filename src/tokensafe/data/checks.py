"""The data checks made at planning on the sources loaded there: train/eval prompt overlap
(:mod:`tokensafe.data.leakage`) and prompt lengths (:mod:`tokensafe.data.lengths`).

Only the local sources are loaded at planning (hub sources need the network, the embedded world's tables are
built by a job); the ``data_overlap`` job repeats the overlap check on every table the run reads. The tokenizer is
loaded only when a local source is in use, so a config on the embedded world alone plans as fast as before.
"""

from __future__ import annotations

import pandas as pd

from tokensafe.data.leakage import overlap_problems, overlap_report, roles_in_use


def planning_problems(config: dict, tables: dict[str, pd.DataFrame], notices: list[str] | None = None) -> list[str]:
    """Problems that stop the run; ``notices`` receives what was left to the jobs or recorded on request."""
    from tokensafe.data.lengths import length_problems, length_report, planning_tokenizer

    notices = [] if notices is None else notices
    report = overlap_report(config, tables)
    problems = overlap_problems(report)
    for p in report["pairs"]:
        if p["allowed"]:
            notices.append(
                f"data.allow_overlap: {p['eval_rows']} data.{p['eval']} prompts are also in data.{p['train']} "
                "(allowed; recorded in results/data/overlap.json)"
            )
    used = [r for r in roles_in_use(config) if r in tables]
    if not used:
        return problems
    tokenizer, positions, notice = planning_tokenizer(config)
    if tokenizer is None:
        notices.append(notice)
        return problems
    if positions is None:
        notices.append(
            f"prompt lengths: models.aligned = {config['models']['aligned']} names no max_position_embeddings in "
            "its config.json: evaluation prompts are checked by the generate jobs"
        )
    truncate = bool(config["data"].get("truncate_long_prompts", False))
    lengths = length_report(config, {r: tables[r] for r in used}, tokenizer, positions)
    problems += length_problems(lengths, truncate)
    if truncate:
        for role, r in lengths["roles"].items():
            if r["too_long"] and role in ("task_eval", "harmful_eval"):
                notices.append(
                    f"data.truncate_long_prompts: {r['too_long']} of {r['rows']} data.{role} prompts are cut to "
                    f"{r['limit']} tokens (recorded in results/data/overlap.json)"
                )
    return problems
