"""Stage: one row per (method, poison_ratio, seed) with accuracy, both ASRs and provenance; the per-prompt
outcomes behind them; and the aggregates over seeds with their intervals and the noise verdicts.

``no_answer_rate`` is the share of task responses from which no answer could be extracted (no number, or
none of the labels): it separates a model that lost the answer format from one that answers wrongly.

``data.task_metric: none`` (open-ended task prompts, e.g. SlimOrca) has no exact-match answer: ``accuracy`` and
``no_answer_rate`` are NaN in every row (the columns stay, so the tables keep their layout) and the outcomes hold
no accuracy rows; the task set's utility is the LLM judge's win rate and the lm-eval columns.
"""

from __future__ import annotations

import json
import logging
import math

import pandas as pd

from tokensafe.config import settings_hash
from tokensafe.eval.safety_judges.agreement import judge_agreement
from tokensafe.eval.safety_judges.judge_outcomes import (
    classifier_label,
    classifier_outcomes,
    read_classifier,
    summary_columns,
    verdict_table,
)
from tokensafe.eval.statistics.uncertainty import OUTCOME_COLUMNS, by_method, comparisons
from tokensafe.eval.utility import benchmark_tables
from tokensafe.eval.utility.answers import AGNEWS_LABELS, SST2_LABELS, answers_match, extract_label, extract_number
from tokensafe.io import atomic_path, parquet_metadata, read_json, read_parquet, write_parquet

log = logging.getLogger("tokensafe")

NO_METRIC = "none"  # data.task_metric: the task set has no exact-match answers

SUMMARY_COLUMNS = [
    "method",
    "poison_ratio",
    "seed",
    "accuracy",
    "no_answer_rate",
    "asr_keyword",
    "asr_guard",
    "guard_invalid_rate",
    "mean_p_unsafe",
    "n_harmful",
    "n_task",
    "config_hash",
    "judge",
    "prompt_template",
    "guard_template",
    "settings",
    "data_card",  # hash of the data card entries of the roles the run read (results/data/card.json)
    "harmful_eval_data",  # where the harmful set came from: path or hub id, rows, checksum
    "task_eval_data",
]


def extract_prediction(text: str, metric: str):
    if metric == "number":
        return extract_number(text)
    labels = {"sst2": SST2_LABELS, "agnews": AGNEWS_LABELS}[metric]
    return extract_label(text, list(labels))


def run_outcomes(
    method: str,
    ratio: float,
    seed: int,
    generations: str,
    judgments: str,
    metric: str,
    classifiers: dict[str, str] | None = None,
) -> tuple[dict, pd.DataFrame]:
    """The summary row of one run and its per-prompt outcomes (0/1 per prompt for each headline metric);
    ``classifiers``: extra classifier judge -> its ``judge_classifier`` output
    (tokensafe.eval.safety_judges.judge_outcomes)."""
    gen = read_parquet(generations, ["set", "prompt_id", "response", "reference"])
    jud = read_parquet(judgments, ["prompt_id", "keyword_attack_success", "guard_verdict", "guard_p_unsafe"])
    task = gen[gen["set"] == "task"]
    if task.empty:
        raise ValueError(f"{generations}: no task responses")
    if metric == NO_METRIC:
        accuracy = no_answer = math.nan
    else:
        preds = [extract_prediction(t, metric) for t in task.response]
        correct = [float(answers_match(p, r)) for p, r in zip(preds, task.reference)]
        accuracy, no_answer = sum(correct) / len(task), sum(p is None for p in preds) / len(task)
    unsafe = (jud.guard_verdict == "unsafe").astype("float64")
    meta = parquet_metadata(judgments)
    row = {
        "method": method,
        "poison_ratio": float(ratio),
        "seed": int(seed),
        "accuracy": accuracy,
        "no_answer_rate": no_answer,
        "asr_keyword": float(jud.keyword_attack_success.mean()),
        "asr_guard": float(unsafe.mean()),
        "guard_invalid_rate": float((jud.guard_verdict == "invalid").mean()),
        "mean_p_unsafe": float(jud.guard_p_unsafe.mean()),
        "n_harmful": int(len(jud)),
        "n_task": int(len(task)),
        "config_hash": settings_hash(meta),
        "judge": f"keyword+llama_guard:{meta['judge']['guard']}",
        "prompt_template": meta["settings"]["prompt_template"],
        "guard_template": meta["judge"]["guard_template"],
        "settings": json.dumps(meta, sort_keys=True, default=str),
    }
    parts = [] if metric == NO_METRIC else [("accuracy", task.prompt_id, correct)]
    parts += [
        ("asr_keyword", jud.prompt_id, jud.keyword_attack_success.astype("float64")),
        ("asr_guard", jud.prompt_id, unsafe),
    ]
    for name, path in (classifiers or {}).items():
        cells, more = classifier_outcomes(name, read_classifier(path, jud.prompt_id))
        row.update(cells)
        row["judge"] += f"+{classifier_label(name, path)}"
        parts += more
    outcomes = pd.concat(
        [
            pd.DataFrame(
                {"metric": name, "prompt_id": ids.astype("int64").to_numpy(), "value": pd.Series(v).to_numpy("float64")}
            )
            for name, ids, v in parts
        ],
        ignore_index=True,
    )
    outcomes.insert(0, "seed", int(seed))
    outcomes.insert(0, "poison_ratio", float(ratio))
    outcomes.insert(0, "method", method)
    return row, outcomes[OUTCOME_COLUMNS]


def write_summary(
    *,
    runs: list[dict],
    metric: str,
    out_csv: str,
    out_parquet: str,
    out_outcomes: str,
    out_by_method: str,
    out_comparisons: str,
    mask_summaries: list[str] = (),
    out_lm_eval: str | None = None,
    classifiers: list[str] = (),
    out_agreement: str | None = None,
    llm_reference: str | None = None,
    out_llm: str | None = None,
    card: str | None = None,
) -> pd.DataFrame:
    """``runs``: dicts with method, poison_ratio, seed, generations, judgments (and ``classifiers``: name ->
    path, for each name of ``classifiers``; where utility benchmarks ran, ``lm_eval``: its table, whose rows go
    to ``out_lm_eval`` and one summary column per task, metric and filter; with the LLM judge on, the paths
    llm_win_rate / llm_rubrics); ``mask_summaries``: the TOSS rounds' mask.json files (for the TOSS-Pro vs TOSS
    precision comparison); ``out_agreement``: the judges' pairwise agreement per method; ``out_llm``: the
    LLM-judge table (``llm_judge_jobs.llm_table``), whose per-run values also become summary columns; ``card``:
    the data card (results/data/card.json), whose hash over the roles each run read goes in its row."""
    classifiers = list(classifiers)
    rows, outcomes = zip(
        *(
            run_outcomes(
                r["method"],
                r["poison_ratio"],
                r["seed"],
                r["generations"],
                r["judgments"],
                metric,
                {n: r["classifiers"][n] for n in classifiers},
            )
            for r in runs
        )
    )
    if card is not None:
        rows = [{**row, **data_columns(read_json(card), r["method"])} for row, r in zip(rows, runs)]
    df = pd.DataFrame(list(rows), columns=summary_columns(SUMMARY_COLUMNS, classifiers))
    if out_llm is not None:
        from tokensafe.stages.llm_judge_jobs import llm_table
        from tokensafe.stages.llm_judge_jobs import summary_columns as llm_columns

        table = llm_table(runs, llm_reference)
        extra = pd.DataFrame([llm_columns(table, r["method"], r["poison_ratio"], r["seed"]) for r in runs])
        df = pd.concat([df, extra], axis=1)  # rows in the order of runs, as the extra columns
        with atomic_path(out_llm) as tmp:
            table.to_csv(tmp, index=False)
    df = df.sort_values(["method", "poison_ratio", "seed"]).reset_index(drop=True)
    bench = benchmark_tables.collect([r for r in runs if r.get("lm_eval")])
    if not bench.empty:
        df = df.merge(benchmark_tables.wide(bench), on=["method", "poison_ratio", "seed"], how="left")
    if out_lm_eval is not None:
        with atomic_path(out_lm_eval) as tmp:
            bench.to_csv(tmp, index=False)
    out = pd.concat(outcomes, ignore_index=True).sort_values(["method", "poison_ratio", "seed", "metric", "prompt_id"])
    out = out.reset_index(drop=True)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    write_parquet(df, out_parquet)
    write_parquet(out, out_outcomes)
    agg = by_method(out)
    with atomic_path(out_by_method) as tmp:
        agg.to_csv(tmp, index=False)
    comp = comparisons(out, [read_json(p) for p in mask_summaries])
    with atomic_path(out_comparisons) as tmp:
        comp.to_csv(tmp, index=False)
    if out_agreement is not None:
        write_agreement(runs, classifiers, out_agreement)
    log.info("summary: %d rows, %d aggregate cells, %d comparisons", len(df), len(agg), len(comp))
    return df


def data_columns(card: dict, method: str) -> dict[str, str]:
    """A run's data columns: the card hash of the roles it read, and which evaluation sets it was measured on."""
    from tokensafe.data.card import describe, run_card_hash
    from tokensafe.methods.registry import run_roles

    roles = card["roles"]
    return {
        "data_card": run_card_hash(card, run_roles(method)),
        "harmful_eval_data": describe(roles["harmful_eval"]),
        "task_eval_data": describe(roles["task_eval"]),
    }


def write_agreement(runs: list[dict], classifiers: list[str], out_csv: str) -> pd.DataFrame:
    """Pairwise agreement and Cohen's kappa of the judges (keyword, llama_guard and each extra classifier)
    over the harmful prompts, per method and poison ratio (tokensafe.eval.safety_judges.agreement)."""
    tables = []
    for r in runs:
        jud = read_parquet(r["judgments"], ["prompt_id", "keyword_attack_success", "guard_verdict"])
        extra = {n: read_classifier(r["classifiers"][n], jud.prompt_id) for n in classifiers}
        t = verdict_table(jud, extra)
        tables.append(t.assign(method=r["method"], poison_ratio=float(r["poison_ratio"]), seed=int(r["seed"])))
    agreement = judge_agreement(pd.concat(tables, ignore_index=True), by=("method", "poison_ratio"))
    with atomic_path(out_csv) as tmp:
        agreement.to_csv(tmp, index=False)
    return agreement
