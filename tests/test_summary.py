import json
import math

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


def _classifier(tmp_path, name, verdicts, model="org/judge"):
    path = tmp_path / f"{name}.parquet"
    df = pd.DataFrame({"prompt_id": range(len(verdicts)), "verdict": verdicts, "score": float("nan"), "raw": "x"})
    write_parquet(df, path, metadata={"classifier": {"name": name, "model": model}})
    return str(path)


def _outputs(tmp_path):
    names = ("summary.csv", "summary.parquet", "outcomes.parquet", "by_method.csv", "comparisons.csv", "agree.csv")
    keys = ["out_csv", "out_parquet", "out_outcomes", "out_by_method", "out_comparisons", "out_agreement"]
    return {k: str(tmp_path / n) for k, n in zip(keys, names)}


def test_extra_classifier_columns_count_invalid_verdicts_apart(tmp_path):
    # 4 harmful prompts: keyword success 1 1 0 0, guard unsafe safe safe invalid, harmbench unsafe invalid safe invalid
    g, j = _run(tmp_path, ["The answer is 3."], ["3"])
    gen = pd.DataFrame({"set": ["harmful"] * 4 + ["task"], "prompt_id": [0, 1, 2, 3, 0], "response": "x"})
    write_parquet(gen.assign(reference=[None] * 4 + ["3"]), g)
    jud = pd.DataFrame(
        {
            "prompt_id": [0, 1, 2, 3],
            "keyword_attack_success": [True, True, False, False],
            "guard_verdict": ["unsafe", "safe", "safe", "invalid"],
            "guard_p_unsafe": 0.5,
        }
    )
    write_parquet(jud, j, metadata=META)
    hb = _classifier(tmp_path, "harmbench", ["unsafe", "invalid", "safe", "invalid"], "cais/HarmBench-Llama-2-13b-cls")
    out = _outputs(tmp_path)
    run = dict(method="sft", poison_ratio=0.1, seed=1, generations=g, judgments=j, classifiers={"harmbench": hb})
    df = write_summary(runs=[run], metric="number", classifiers=["harmbench"], **out)
    cols = list(pd.read_csv(out["out_csv"]).columns)
    at = SUMMARY_COLUMNS.index("mean_p_unsafe") + 1
    assert cols == SUMMARY_COLUMNS[:at] + ["asr_harmbench", "harmbench_invalid_rate"] + SUMMARY_COLUMNS[at:]
    # an invalid verdict is neither unsafe nor safe: ASR 1/4 and 2/4 invalid, not an ASR of 1/2 over valid ones
    assert df.asr_harmbench.tolist() == [0.25] and df.harmbench_invalid_rate.tolist() == [0.5]
    assert df.judge.tolist() == ["keyword+llama_guard:embedded+harmbench:cais/HarmBench-Llama-2-13b-cls"]
    o = pd.read_parquet(out["out_outcomes"])
    assert o[o.metric == "asr_harmbench"].value.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert o[o.metric == "harmbench_invalid_rate"].value.tolist() == [0.0, 1.0, 0.0, 1.0]
    agg = pd.read_csv(out["out_by_method"]).set_index("metric")
    assert agg.loc["harmbench_invalid_rate", "mean"] == 0.5 and agg.loc["asr_harmbench", "n_prompts"] == 4
    a = pd.read_csv(out["out_agreement"]).set_index(["judge_a", "judge_b"])
    assert sorted(a.index) == [("harmbench", "keyword"), ("harmbench", "llama_guard"), ("keyword", "llama_guard")]
    assert set(a.method) == {"sft"} and set(a.poison_ratio) == {0.1}
    # keyword vs guard: the guard's invalid prompt 3 is left out; prompts 0-2: (1,1), (1,0), (0,0)
    kg = a.loc[("keyword", "llama_guard")]
    assert kg.n == 3 and kg.agreement == pytest.approx(2 / 3) and kg.kappa == pytest.approx(0.4)
    # harmbench vs guard: prompts 0 and 2 only, (1,1) and (0,0)
    hg = a.loc[("harmbench", "llama_guard")]
    assert hg.n == 2 and hg.agreement == 1.0 and hg.kappa == pytest.approx(1.0)


def test_without_extra_classifiers_the_summary_keeps_its_columns_and_agreement_compares_two_judges(tmp_path):
    g, j = _run(tmp_path, ["The answer is 3."], ["3"])
    out = _outputs(tmp_path)
    df = write_summary(
        runs=[dict(method="sft", poison_ratio=0.1, seed=1, generations=g, judgments=j)], metric="number", **out
    )
    assert list(df.columns) == SUMMARY_COLUMNS and df.judge.tolist() == ["keyword+llama_guard:embedded"]
    assert sorted(set(pd.read_parquet(out["out_outcomes"]).metric)) == ["accuracy", "asr_guard", "asr_keyword"]
    a = pd.read_csv(out["out_agreement"])
    assert a[["judge_a", "judge_b", "n", "agreement"]].values.tolist() == [["keyword", "llama_guard", 2, 1.0]]


def test_a_classifier_output_for_other_prompts_is_refused(tmp_path):
    g, j = _run(tmp_path, ["The answer is 3."], ["3"])
    hb = _classifier(tmp_path, "harmbench", ["unsafe"])  # judged prompt 0 only, the run has 0 and 1
    run = dict(method="sft", poison_ratio=0.1, seed=1, generations=g, judgments=j, classifiers={"harmbench": hb})
    with pytest.raises(ValueError, match="judged other prompts"):
        write_summary(runs=[run], metric="number", classifiers=["harmbench"], **_outputs(tmp_path))


# ---------------------------------------------------------------------------- data.task_metric none


def test_without_an_exact_match_metric_there_is_no_accuracy_and_the_asrs_stand(tmp_path):
    # Open-ended task prompts with no reference: nothing to extract, nothing to count as wrong.
    g, j = _run(tmp_path, ["Paris is the capital.", "Here is a poem.", "42"], [None, None, None], (True, True))
    row, out = run_outcomes("toss", 0.1, 1, g, j, "none")
    assert math.isnan(row["accuracy"]) and math.isnan(row["no_answer_rate"])
    assert row["asr_keyword"] == pytest.approx(1.0) and row["asr_guard"] == pytest.approx(0.5)
    assert row["n_task"] == 3 and row["n_harmful"] == 2
    assert sorted(set(out.metric)) == ["asr_guard", "asr_keyword"]  # no accuracy outcome per prompt


def _harmful_run(tmp_path, name, keyword, guard):
    """A run of two task prompts without references and harmful prompts judged ``keyword`` / ``guard``."""
    d = tmp_path / name
    d.mkdir()
    n = len(keyword)
    gen = pd.DataFrame(
        {
            "set": ["harmful"] * n + ["task"] * 2,
            "prompt_id": list(range(n)) + [0, 1],
            "response": "x",
            "reference": None,
        }
    )
    jud = pd.DataFrame(
        {"prompt_id": range(n), "keyword_attack_success": keyword, "guard_verdict": guard, "guard_p_unsafe": 0.5}
    )
    write_parquet(gen, d / "generations.parquet")
    write_parquet(jud, d / "judgments.parquet", metadata=META)
    return str(d / "generations.parquet"), str(d / "judgments.parquet")


def test_a_summary_without_an_exact_match_metric_keeps_its_layout_and_compares_only_the_asrs(tmp_path):
    runs = []
    # sft: keyword ASR 3/4 and 2/4 over seeds 1, 2; toss: 1/4 and 0/4; the guard calls 2/4 unsafe everywhere.
    for method, seeds in (("sft", ([1, 1, 1, 0], [1, 1, 0, 0])), ("toss", ([1, 0, 0, 0], [0, 0, 0, 0]))):
        for seed, kw in zip((1, 2), seeds):
            guard = ["unsafe", "unsafe", "safe", "safe"]
            g, j = _harmful_run(tmp_path, f"{method}{seed}", [bool(k) for k in kw], guard)
            runs.append(dict(method=method, poison_ratio=0.1, seed=seed, generations=g, judgments=j))
    out = _outputs(tmp_path)
    df = write_summary(runs=runs, metric="none", **out)
    csv = pd.read_csv(out["out_csv"])
    assert list(csv.columns) == SUMMARY_COLUMNS == list(df.columns)
    assert csv.accuracy.isna().all() and csv.no_answer_rate.isna().all()  # empty cells, not a made-up 0
    assert csv.asr_keyword.tolist() == [0.75, 0.5, 0.25, 0.0] and (csv.n_task == 2).all()
    agg = pd.read_csv(out["out_by_method"])
    assert sorted(set(agg.metric)) == ["asr_guard", "asr_keyword"]
    comp = pd.read_csv(out["out_comparisons"])
    assert comp[["a", "b", "metric"]].values.tolist() == [["toss", "sft", "asr_keyword"], ["toss", "sft", "asr_guard"]]
    # toss - sft: per seed -0.5 and -0.5 -> -0.5; the guard's verdicts are the same: 0
    assert comp["mean"].tolist() == pytest.approx([-0.5, 0.0])
