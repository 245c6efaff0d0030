"""lm-eval results across runs: the tidy table (``results/lm_eval.csv``), its columns in the summary, and the
report's table (methods x poison ratios per task, metric and filter, with the harness's stderr)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tokensafe.io import parquet_metadata, read_parquet

RUN_KEYS = ["method", "poison_ratio", "seed"]
LM_EVAL_COLUMNS = [
    *RUN_KEYS,
    "task",
    "metric",
    "filter",
    "value",
    "stderr",
    "n_samples",
    "num_fewshot",
    "apply_chat_template",
    "fewshot_as_multiturn",
    "backend",
    "lm_eval_version",
]


def collect(runs: list[dict]) -> pd.DataFrame:
    """One row per (run, task, metric, filter) from each run's ``lm_eval`` table (``runs``: dicts with method,
    poison_ratio, seed and lm_eval, the table's path), with the settings it was scored under."""
    parts = []
    for r in runs:
        rows = read_parquet(r["lm_eval"], ["task", "metric", "filter", "value", "stderr"])
        meta = parquet_metadata(r["lm_eval"])
        bench = meta.get("benchmarks", {})
        rows = rows.assign(
            method=r["method"],
            poison_ratio=float(r["poison_ratio"]),
            seed=int(r["seed"]),
            apply_chat_template=bool(bench.get("apply_chat_template", False)),
            fewshot_as_multiturn=bool(bench.get("fewshot_as_multiturn", False)),
            backend=bench.get("backend", "hf"),
            lm_eval_version=meta.get("lm_eval_version", ""),
        )
        parts.append(rows)
    if not parts:
        return pd.DataFrame(columns=LM_EVAL_COLUMNS)
    out = pd.concat(parts, ignore_index=True)[LM_EVAL_COLUMNS]
    return out.sort_values([*RUN_KEYS, "task", "metric", "filter"]).reset_index(drop=True)


def column_name(task: str, metric: str, filt: str) -> str:
    return f"lm_eval:{task}:{metric}:{filt}"


def wide(tidy: pd.DataFrame) -> pd.DataFrame:
    """(method, poison_ratio, seed) x one ``lm_eval:<task>:<metric>:<filter>`` column each, for the summary."""
    if tidy.empty:
        return pd.DataFrame(columns=RUN_KEYS)
    t = tidy.assign(column=[column_name(*k) for k in zip(tidy["task"], tidy["metric"], tidy["filter"])])
    w = t.pivot_table(index=RUN_KEYS, columns="column", values="value", aggfunc="first")
    w.columns.name = None
    return w[sorted(w.columns)].reset_index()


def section(tidy: pd.DataFrame, method_order) -> str:
    """Per (task, metric, filter): methods x poison ratios, each cell the mean over seeds (%) +- the harness's
    stderr (the mean of the seeds' stderrs: the sampling error of one run), with the number of seeds."""
    if tidy.empty:
        return "No lm-eval results."
    ratios = sorted(tidy.poison_ratio.unique())
    first = tidy.iloc[0]
    lines = [
        f"lm-evaluation-harness {first.lm_eval_version}, backend `{first.backend}`, chat template "
        f"{'on' if first.apply_chat_template else 'off'}"
        f"{', few-shot as multi-turn' if first.fewshot_as_multiturn else ''}. Each cell: mean over seeds (%) "
        "+- the harness's standard error of one run; n = seeds. Every filter of a task is shown: strict and "
        "flexible answer extraction can differ a lot."
    ]
    for (task, metric, filt), d in tidy.groupby(["task", "metric", "filter"], sort=True):
        shots = sorted(set(d.num_fewshot))
        lines += [
            "",
            f"**{task}** - {metric} ({filt}), {', '.join(map(str, shots))}-shot, {int(d.n_samples.max())} samples",
            "",
            "| Method | " + " | ".join(f"P={r:g}" for r in ratios) + " |",
            "|---|" + "---|" * len(ratios),
        ]
        g = d.groupby(["method", "poison_ratio"])
        agg = g.value.mean().to_frame("value").join(g.stderr.mean()).join(g.size().rename("n"))
        for m in method_order(d.method):
            cells = []
            for r in ratios:
                if (m, r) not in agg.index:
                    cells.append("-")
                    continue
                a = agg.loc[(m, r)]
                err = "" if np.isnan(a.stderr) else f" +- {100 * a.stderr:.1f}"
                cells.append(f"{100 * a.value:.1f}{err} n={int(a.n)}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
