"""Every method end to end on the micro world at one poison ratio, then the plans for method/round changes."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from workflow_utils import REPO, micro_config, planned_jobs, write_config

pytestmark = pytest.mark.e2e

ALL_BUT_PREFIX = [
    "sft",
    "toss",
    "toss_pro",
    "pact",
    "pact_fullkl",
    "pact_tokens",
    "pact_weights",
    "pact_noprompt",
    "constrained_sft",
    "random_mask",
    "safety_mix",
    "safelora",
    "asft",
]


# What one more (or one retrained) non-SFT run adds beside its generate and judge jobs: its lm-eval scores, its
# LLM-judge rubric scores and its win rate against SFT at the same ratio and seed.
ONE_RUN_EVALS = {"lm_eval": 1, "llm_rubrics": 1, "llm_win_rate": 1}


def methods_config():
    cfg = micro_config()
    cfg["poison_ratios"] = [0.1]
    cfg["methods"] = ALL_BUT_PREFIX
    cfg["toss"]["recipe"] = {"lr": 3.0e-3, "batch_size": 16, "steps": 3}
    cfg["toss"]["pro"] = {"rounds": 1, "k": 6}
    cfg["pact"]["n_prompts"] = 16
    cfg["pact"]["filter_refusals"] = False  # the micro aligned model is trained too briefly to refuse
    cfg["pact"]["k"] = 8
    cfg["baselines"]["safety_mix"]["n"] = 5
    return cfg


@pytest.fixture(scope="module")
def finished(micro_run):
    cfg = methods_config()
    return micro_run("methods", cfg), cfg


def test_every_method_has_a_row(finished):
    wd, cfg = finished
    s = pd.read_csv(wd / "results" / "summary.csv")
    assert sorted(s.method) == sorted(["initial", *cfg["methods"]])
    assert (s.poison_ratio == 0.1).all()
    settings = {m: json.loads(x)["settings"].get("method_settings") for m, x in zip(s.method, s.settings)}
    assert settings["initial"] is None
    assert settings["pact"]["lambda"] == cfg["pact"]["lambda"]
    assert settings["toss_pro"]["rounds"] == 1 and "rounds" not in settings["toss"]
    assert settings["random_mask"] == {"d": 0.1}


def test_snakemakes_html_report_lists_the_fine_tuning_items_with_their_labels(finished, tmp_path):
    """The Fine-tuning category of `snakemake --report`: every TOSS mask summary and PACT weight-conflict file
    of the run, labelled by poison ratio, seed (and round)."""
    from workflow_utils import snakemake

    wd, cfg = finished
    out = tmp_path / "report.html"
    snakemake(wd, write_config(cfg, wd, "report.yaml"), "--report", str(out))
    html = out.read_text()
    start = html.index("var results = ", html.index('<script id="results">')) + len("var results = ")
    results = json.JSONDecoder().raw_decode(html, start)[0]
    masks = {p: r["labels"] for p, r in results.items() if p.startswith("results/toss/")}
    assert masks == {
        f"results/toss/p0.1/s1/round{t}/mask.json": {"poison ratio": "0.1", "seed": "1", "round": str(t)}
        for t in (0, 1)
    }
    conflicts = {p: r["labels"] for p, r in results.items() if p.startswith("results/pact/")}
    assert conflicts == {"results/pact/p0.1/s1/weight_conflicts.json": {"poison ratio": "0.1", "seed": "1"}}


def test_toss_masks_and_training_use_them(finished):
    wd, cfg = finished
    for rnd in (0, 1):
        m = json.loads((wd / f"results/toss/p0.1/s1/round{rnd}/mask.json").read_text())
        assert m["tokens_discarded"] == int(0.1 * m["tokens_total"])
        assert 0 <= m["poison_precision"] <= 1 and 0 <= m["poison_recall"] <= 1
    picks = pd.read_parquet(wd / "results/toss/p0.1/s1/round1/picks.parquet")
    assert len(picks) == 6 and picks.sample_id.is_unique
    trained = json.loads((wd / "results/runs/toss_pro/p0.1/s1/adapter/training.json").read_text())
    assert trained["info"]["mask"].endswith("round1/mask.parquet") and trained["info"]["tokens_discarded"] > 0
    assert trained["inputs"] == {
        "mask": "results/toss/p0.1/s1/round1/mask.parquet"
    }  # provenance, replayed by gpu_smoke


def test_pact_tokens_reference_and_report(finished):
    wd, cfg = finished
    tokens = pd.read_parquet(wd / "results/pact/safety_tokens.parquet")
    assert list(tokens.columns) == ["rank", "token_id", "token", "gap", "mean_prob_aligned", "weight"]
    assert len(tokens) == 8 and tokens.token_id.is_unique and abs(tokens.weight.sum() - 1) < 1e-5
    report = (wd / "results/report.md").read_text()
    for heading in (
        "Task answers without an extractable answer",
        "TOSS masks against the known poison tokens",
        "PACT safety tokens",
        "PACT: where the weighted KL fights the cross-entropy",
        "PACT ablation ladder",
    ):
        assert heading in report
    conflicts = json.loads((wd / "results/pact/p0.1/s1/weight_conflicts.json").read_text())
    assert (conflicts["poison_ratio"], conflicts["seed"]) == (0.1, 1)
    assert "| 0.1 | 1 | clean samples |" in report
    for label in ("Full-vocab KL", "+ safety tokens", "+ safety weights", "+ no-prompt reference", "+ position decay"):
        assert label in report
    post = json.loads((wd / "results/runs/safelora/p0.1/s1/adapter/training.json").read_text())["post_training"]
    assert len(post["layers"]) == 4  # q_proj and v_proj of both layers
    n = cfg["baselines"]["safelora"]["num_layers"]  # the config chooses by count (IBM's rule)
    sims = {name: v["similarity"] for name, v in post["layers"].items()}
    least = set(sorted(sims, key=lambda name: (sims[name], name))[:n])
    assert post["num_layers"] == n and post["num_projected"] == len(least)
    assert {name for name, v in post["layers"].items() if v["projected"]} == least


def test_raising_rounds_adds_only_the_new_round(finished):
    wd, cfg = finished
    c = json.loads(json.dumps(cfg))
    c["toss"]["pro"]["rounds"] = 2
    assert planned_jobs(wd, write_config(c, wd, "rounds.yaml")) == {
        "toss_pro_retrain": 1,
        "toss_losses": 1,
        "toss_mask": 1,
        "finetune": 1,
        "generate": 1,
        "judge": 1,
        **ONE_RUN_EVALS,
        "summary": 1,
        "report": 1,
        "all": 1,
    }


def test_a_method_recipe_retrains_only_that_method(finished):
    wd, cfg = finished
    c = json.loads(json.dumps(cfg))
    c["finetune"]["method_recipes"] = {"pact": {"batch_size": 4}}
    assert planned_jobs(wd, write_config(c, wd, "recipe.yaml")) == {
        "finetune": 1,
        "generate": 1,
        "judge": 1,
        **ONE_RUN_EVALS,
        "summary": 1,
        "report": 1,
        "all": 1,
    }
    c["finetune"]["method_recipes"] = {"pact": {"batch_size": cfg["finetune"]["recipe"]["batch_size"]}}  # same recipe
    assert planned_jobs(wd, write_config(c, wd, "same.yaml")) == {}


def test_adding_or_removing_a_baseline_touches_only_it(finished):
    wd, cfg = finished
    c = dict(cfg, methods=[m for m in cfg["methods"] if m != "asft"])
    assert planned_jobs(wd, write_config(c, wd, "minus.yaml")) == {"summary": 1, "report": 1, "all": 1}
    c = dict(cfg, methods=cfg["methods"] + ["prefix_mask"])
    assert planned_jobs(wd, write_config(c, wd, "plus.yaml")) == {
        "finetune": 1,
        "generate": 1,
        "judge": 1,
        **ONE_RUN_EVALS,
        "summary": 1,
        "report": 1,
        "all": 1,
    }


def test_gpu_smoke_check_replays_every_stage(finished):
    """tests/gpu_smoke.py is run by hand on GPUs; on the CPU its replay of the run must be exact."""
    wd, cfg = finished
    out = wd / "smoke.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests/gpu_smoke.py"),
            "--cpu",
            "--steps",
            "2",
            "--config",
            str(wd / "config.yaml"),
            "--out",
            str(out),
        ],
        cwd=wd,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["loss_dump"]["same_token_ids"] and rep["loss_dump"]["mean_abs_diff"] == 0.0
    assert rep["pact_reference"]["full_mean_abs_diff"] == 0.0 and rep["pact_reference"]["post_mean_abs_diff"] == 0.0
    trained = {m for m, v in rep["finetune"].items() if isinstance(v, dict) and v.get("ok")}
    assert trained == set(cfg["methods"])
    for run in ("initial/s1", "sft/p0.1/s1"):
        r = rep["generate_judge"][run]
        assert r["same_text_share"] == 1.0 and r["cpu"] == r["replay"]


PACT_FAMILY = [m for m in ALL_BUT_PREFIX if m.startswith("pact")]


@pytest.mark.parametrize(
    "change, plan",
    [
        # Answers to the eval prompts get longer: generation and judging only (PACT's safe answers are R tokens
        # long, pact.response_tokens, and read only the generation batch size).
        # (lm-eval's task answers read task_max_new_tokens only; every LLM-judge job reads the harmful answers.)
        (
            lambda c: c["generation"].update(max_new_tokens=12),
            {"generate": 14, "judge": 14, "llm_rubrics": 14, "llm_win_rate": 13},
        ),
        # PACT's KL weight: the PACT-family fine-tunes and their evaluation, no PACT preparation stage.
        (
            lambda c: c["pact"].update({"lambda": 1.0}),
            {
                rule: len(PACT_FAMILY)
                for rule in ("finetune", "generate", "judge", "lm_eval", "llm_rubrics", "llm_win_rate")
            },
        ),
        # TOSS's share of discarded tokens: the masks (rounds 0 and 1) and the two TOSS runs; no reference
        # model, no loss dump and no TOSS-Pro retrain (they do not read d).
        (
            lambda c: c["toss"].update(d=0.2),
            {
                "toss_mask": 2,
                **{r: 2 for r in ("finetune", "generate", "judge", "lm_eval", "llm_rubrics", "llm_win_rate")},
            },
        ),
    ],
)
def test_a_setting_reruns_only_the_stages_that_read_it(finished, tmp_path, change, plan):
    wd, cfg = finished
    c = json.loads(json.dumps(cfg))
    change(c)
    assert planned_jobs(wd, write_config(c, tmp_path)) == {**plan, "summary": 1, "report": 1, "all": 1}


def test_the_rerun_matrix_has_a_row_for_every_config_leaf():
    from rerun_matrix import load_matrix, schema_leaves

    keys = [r["key"] for r in load_matrix()]
    assert sorted(set(schema_leaves()) - set(keys)) == []  # a new config key needs its row
    assert len(keys) == len(set(keys))


def test_every_change_of_the_rerun_matrix_plans_exactly_its_jobs(finished):
    """tests/data/rerun_matrix.yaml: each change, dry-run on the finished run, plans exactly the jobs its row
    says (two dry runs at a time: each is a Snakemake process)."""
    from concurrent.futures import ThreadPoolExecutor

    from rerun_matrix import apply, load_matrix, plan

    wd, cfg = finished
    rows = load_matrix()
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda ir: plan(wd, apply(cfg, ir[1]), f"matrix{ir[0]}.yaml"), enumerate(rows)))
    if os.environ.get("TOKENSAFE_WRITE_RERUN_MATRIX"):  # maintainer mode (tests/rerun_matrix.py): write, then review
        from rerun_matrix import write_plans

        print("rows rewritten:", write_plans({r["key"]: g for r, g in zip(rows, got)}))
        return
    wrong = {r["key"]: {"expected": r["plan"], "planned": g} for r, g in zip(rows, got) if g != r["plan"]}
    assert wrong == {}
