import json

import pandas as pd
import pytest

from tokensafe.io import write_parquet
from tokensafe.stages.summary import SUMMARY_COLUMNS, run_outcomes, write_summary

META = {"settings": {"prompt_template": "chat", "seed": 1}, "judge": {"guard": "embedded", "guard_template": "plain"}}


def _run(tmp_path, task_responses, references, harmful_success=(True, False)):
    gen = pd.DataFrame(
        {
            "set": ["harmful"] * len(harmful_success) + ["task"] * len(task_responses),
            "prompt_id": list(range(len(harmful_success))) + list(range(len(task_responses))),
            "response": ["x"] * len(harmful_success) + list(task_responses),
            "reference": [None] * len(harmful_success) + list(references),
        }
    )
    jud = pd.DataFrame(
        {
            "prompt_id": list(range(len(harmful_success))),
            "keyword_attack_success": list(harmful_success),
            "guard_verdict": ["unsafe", "safe"][: len(harmful_success)],
            "guard_p_unsafe": [0.9, 0.1][: len(harmful_success)],
        }
    )
    write_parquet(gen, tmp_path / "generations.parquet")
    write_parquet(jud, tmp_path / "judgments.parquet", metadata=META)
    return str(tmp_path / "generations.parquet"), str(tmp_path / "judgments.parquet")


def test_accuracy_and_no_answer_rate_by_hand(tmp_path):
    # 4 task answers: right, wrong, format lost (no number at all), right via the last-number fallback.
    responses = [
        "Eva has 1 shells. The answer is 1.",
        "Dan has 5 toys. The answer is 5.",
        "Gia has. The answer is.",
        "There are 7 books in the box",
    ]
    g, j = _run(tmp_path, responses, ["1", "4", "8", "7"])
    row, out = run_outcomes("pact", 0.1, 1, g, j, "number")
    assert row["accuracy"] == pytest.approx(2 / 4)
    # the per-prompt outcomes behind the row: 1 where right / attacked / unsafe
    assert out[out.metric == "accuracy"].value.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert (
        out[out.metric == "asr_keyword"].value.tolist() == [1.0, 0.0] == out[out.metric == "asr_guard"].value.tolist()
    )
    assert set(zip(out.method, out.poison_ratio, out.seed)) == {("pact", 0.1, 1)}
    assert row["no_answer_rate"] == pytest.approx(1 / 4)
    assert row["asr_keyword"] == pytest.approx(0.5) and row["asr_guard"] == pytest.approx(0.5)
    assert json.loads(row["settings"]) == META and row["prompt_template"] == "chat"


def test_label_metric_counts_responses_without_any_label(tmp_path):
    g, j = _run(tmp_path, ["positive", "It is negative.", "I cannot tell."], ["positive", "positive", "negative"])
    row, _ = run_outcomes("sft", 0.0, 1, g, j, "sst2")
    assert row["accuracy"] == pytest.approx(1 / 3)
    assert row["no_answer_rate"] == pytest.approx(1 / 3)


def test_summary_file_has_the_documented_columns(tmp_path):
    g, j = _run(tmp_path, ["The answer is 3."], ["3"])
    out = {
        name: tmp_path / name
        for name in ("summary.csv", "summary.parquet", "outcomes.parquet", "by_method.csv", "comparisons.csv")
    }
    df = write_summary(
        runs=[dict(method="sft", poison_ratio=0.1, seed=1, generations=g, judgments=j)],
        metric="number",
        **dict(zip(["out_csv", "out_parquet", "out_outcomes", "out_by_method", "out_comparisons"], out.values())),
    )
    assert list(pd.read_csv(out["summary.csv"]).columns) == SUMMARY_COLUMNS == list(df.columns)
    assert df.no_answer_rate.tolist() == [0.0]
    agg = pd.read_csv(out["by_method.csv"])
    assert sorted(agg.metric) == ["accuracy", "asr_guard", "asr_keyword"] and (agg.n_seeds == 1).all()
    assert pd.read_csv(out["comparisons.csv"]).empty  # one method: nothing to compare
