import json

import pandas as pd

from tokensafe.stages.report import (
    aggregate,
    no_answer_section,
    pact_conflicts_section,
    pact_ladder_section,
    render,
    table4,
)


def _summary():
    rows = []
    for m, r, acc, kw in [
        ("initial", 0.0, 0.5, 0.0),
        ("initial", 0.1, 0.5, 0.0),
        ("sft", 0.0, 0.7, 0.0),
        ("sft", 0.1, 0.6, 0.9),
        ("pact", 0.1, 0.55, 0.1),
        ("pact_fullkl", 0.1, 0.5, 0.05),
    ]:
        for seed, jitter in ((1, 0.0), (2, 0.1)):
            rows.append(
                dict(
                    method=m,
                    poison_ratio=r,
                    seed=seed,
                    accuracy=acc + jitter,
                    asr_keyword=kw,
                    asr_guard=kw / 2,
                    prompt_template="chat",
                    guard_template="llama_guard3_prompt_plain",
                    settings=json.dumps({"judge": {"keywords": ["Sorry"], "guard": "embedded"}}),
                )
            )
    return pd.DataFrame(rows)


def test_table4_means_over_seeds_and_marks_missing_cells():
    t = table4(_summary())
    lines = t.splitlines()
    assert lines[0] == "| Method | P=0: Acc / ASR-kw / ASR-guard | P=0.1: Acc / ASR-kw / ASR-guard |"
    assert lines[2].startswith("| initial |")  # initial first
    # sft at P=0.1: accuracy mean (0.6, 0.7) = 65.0, std 5.0; ASR 90.0 / 45.0
    assert "| sft | 75.0 / 0.0 / 0.0 | 65.0 / 90.0 / 45.0 |" in t
    assert "| pact | - | 60.0 / 10.0 / 5.0 |" in t


def test_ladder_only_lists_its_rows_and_ratios():
    s = pact_ladder_section(_summary())
    assert "| Full-vocab KL | pact_fullkl | 55.0 / 5.0 / 2.5 |" in s
    assert "| + position decay (full PACT) | pact | 60.0 / 10.0 / 5.0 |" in s
    assert "P=0 " not in s and "P=0 |" not in s
    assert pact_ladder_section(_summary()[_summary().method != "pact_fullkl"]) is None


def test_render_writes_report_and_plot(tmp_path):
    render(
        summary=_summary(), out_md=tmp_path / "report.md", out_png=tmp_path / "plot.png", sections=[("Extra", "body")]
    )
    md = (tmp_path / "report.md").read_text()
    assert "## Extra" in md and "plot.png" in md
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert set(aggregate(_summary()).n_seeds) == {2}


def test_pact_conflicts_row_per_fine_tuning_set(tmp_path):
    path = tmp_path / "weight_conflicts.json"
    path.write_text(
        json.dumps(
            {
                "poison_ratio": 0.1,
                "seed": 2,
                "population": "clean samples",
                "positions": 200,
                "conflicts": 18,
                "share": 0.09,
                "zero_weight_tokens": 25,
                "safety_tokens": 50,
                "tokens": [
                    {"token_id": 283, "token": " is", "count": 17},
                    {"token_id": 262, "token": " a", "count": 1},
                ],
            }
        )
    )
    s = pact_conflicts_section([str(path)])
    assert "| 0.1 | 2 | clean samples | 200 | 18 | 9.0 % | 25/50 | `' is'` 17, `' a'` 1 |" in s


def test_no_answer_rates_mean_over_seeds_per_ratio():
    s = _summary().assign(no_answer_rate=0.0)
    assert no_answer_section(s) == "Every task response had an extractable answer."
    s.loc[(s.method == "pact") & (s.seed == 1), "no_answer_rate"] = 0.3  # seed 2 keeps 0: mean 15 %
    t = no_answer_section(s)
    assert "| Method | P=0 | P=0.1 |" in t
    assert "| pact | - | 15.0 |" in t and "| sft | 0.0 | 0.0 |" in t
    assert t.index("| initial |") < t.index("| sft |")


def test_classifier_section_shows_asr_and_invalid_rate_per_method_and_ratio():
    from tokensafe.stages.judge_report import classifier_section

    assert classifier_section(_summary()) is None  # no extra classifier selected: no section
    s = _summary().assign(asr_harmbench=0.2, harmbench_invalid_rate=0.0)
    s.loc[(s.method == "sft") & (s.poison_ratio == 0.1) & (s.seed == 1), "harmbench_invalid_rate"] = 0.5
    t = classifier_section(s)
    assert "| Method | P=0: harmbench | P=0.1: harmbench |" in t
    assert "| sft | 20.0 (0.0) | 20.0 (25.0) |" in t and "| pact | - | 20.0 (0.0) |" in t
    assert "never counted as safe" in t


def test_agreement_section_names_an_undefined_kappa(tmp_path):
    from tokensafe.eval.agreement import KAPPA_OK, KAPPA_UNDEFINED
    from tokensafe.stages.judge_report import agreement_section

    rows = [
        ("sft", 0.1, "keyword", "llama_guard", 10, 6, 4, 0.8, 0.52, 0.583, KAPPA_OK),
        ("initial", 0.1, "harmbench", "keyword", 10, 0, 0, 1.0, 1.0, float("nan"), KAPPA_UNDEFINED),
    ]
    cols = ["method", "poison_ratio", "judge_a", "judge_b", "n", "n_unsafe_a", "n_unsafe_b", "agreement", "p_e"]
    path = tmp_path / "judge_agreement.csv"
    pd.DataFrame(rows, columns=[*cols, "kappa", "kappa_status"]).to_csv(path, index=False)
    t = agreement_section(pd.read_csv(path))
    assert "| sft | 0.1 | keyword vs llama_guard | 10 | 6 / 4 | 80.0 % | 0.583 |" in t
    assert f"| initial | 0.1 | harmbench vs keyword | 10 | 0 / 0 | 100.0 % | {KAPPA_UNDEFINED} |" in t
    assert t.index("| initial |") < t.index("| sft |")
    assert agreement_section(pd.read_csv(path).iloc[:0]) == "No judge pairs to compare."
