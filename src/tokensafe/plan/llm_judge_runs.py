"""What the LLM judge (judge.llm) is asked, planned before any job: per run, its win rate against the reference
run's response to the same prompt (the reference run itself gets none: 50 by definition; 'initial' gets one per
poison ratio, against the reference at that ratio and seed) and its rubric scores on the harmful prompts. A run at
a (ratio, seed) where the reference does not run gets no win rate (listed in the plan and the report).

Each job's params are the judge.llm keys it reads, and no other job's are (a rerun asks the judge only what its
cache lacks). Torch-free: the Snakefile calls these when it plans.
"""

from __future__ import annotations

from tokensafe.config import classify_model_ref, ratio_tag
from tokensafe.plan.runs import WORLD, all_runs, method_ratios, method_seeds


def llm(config: dict) -> dict:
    return config["judge"]["llm"]


def enabled(config: dict) -> bool:
    return bool(llm(config).get("enabled"))


def wants_win_rate(config: dict) -> bool:
    return enabled(config) and llm(config).get("pairwise_template") is not None


def wants_rubrics(config: dict) -> bool:
    return enabled(config) and bool(llm(config).get("rubrics"))


def reference(config: dict) -> str:
    """The method every win rate is against (judge.llm.reference)."""
    return llm(config).get("reference", "sft")


def local_server(config: dict) -> bool:
    """Whether the jobs serve the judge themselves (judge.llm.server transformers / vllm) rather than call one."""
    return enabled(config) and llm(config).get("server") in ("transformers", "vllm")


def config_problem(config: dict) -> str | None:
    """What makes judge.llm unusable with the rest of the config, or None."""
    cfg = llm(config)
    if cfg["server"] == "external" and not (cfg.get("base_url") and cfg.get("model")):
        return "judge.llm.server external needs judge.llm.base_url and judge.llm.model"
    if local_server(config) and cfg["model_path"] == "embedded" and config["models"]["aligned"] != "embedded":
        return (
            "judge.llm.model_path embedded is the embedded world's judge stand-in: it knows only the world's "
            "prompts and responses. With models.aligned a real model, point judge.llm at a real judge "
            "(docs/real-models.md, 'The LLM judge': server external with GPT-4o or your server, or model_path a "
            "local folder) or set judge.llm.enabled: false"
        )
    if wants_win_rate(config) and reference(config) not in config["methods"]:
        methods = list(config["methods"])
        return (
            f"judge.llm.reference {reference(config)} is not in methods {methods}: every win rate is against its runs"
        )
    return None


def win_rate_params(config: dict) -> dict:
    """What a win-rate job reads of judge.llm: not the rubrics."""
    return {k: v for k, v in llm(config).items() if k != "rubrics"}


def rubric_params(config: dict) -> dict:
    """What a rubric job reads of judge.llm: not the pairwise template nor the reference."""
    return {k: v for k, v in llm(config).items() if k not in ("pairwise_template", "reference")}


def judge_model(config: dict) -> str | None:
    """The model a local judge server loads (the embedded stand-in's folder for 'embedded'); None when external."""
    if not local_server(config):
        return None
    path = llm(config)["model_path"]
    return f"{WORLD}/judge" if path == "embedded" else path


def judge_input(config: dict) -> list[str]:
    """The local judge model's folder, tracked as an input (nothing for a hub id or an external judge)."""
    if not local_server(config):
        return []
    path = llm(config)["model_path"]
    return {"embedded": [f"{WORLD}/judge"], "local": [path], "hub": []}[classify_model_ref(path)]


def reference_cells(config: dict) -> set[tuple[str, int]]:
    """The reference's (ratio tag, seed) cells: a run at a cell without one gets no win rate."""
    if not wants_win_rate(config):
        return set()
    ref = reference(config)
    return {(r, int(s)) for r in method_ratios(config, ref) for s in method_seeds(config, ref)}


def llm_paths(config: dict, run: dict, cells: set[tuple[str, int]] | None = None) -> dict:
    """The LLM-judge outputs of one run (a dict of all_runs()): {'llm_win_rate': path | None, 'llm_rubrics': ...,
    'llm_win_rate_skipped': True where the reference does not run at the run's ratio and seed}. ``cells``:
    :func:`reference_cells`, computed once by a caller that asks for many runs."""
    cells = reference_cells(config) if cells is None else cells
    tag = ratio_tag(run["poison_ratio"])
    win = wants_win_rate(config) and run["method"] != reference(config)
    skipped = win and (tag, int(run["seed"])) not in cells
    return {
        "llm_win_rate": f"results/runs/{run['run']}/llm_win_rate/p{tag}.parquet" if win and not skipped else None,
        "llm_rubrics": f"results/runs/{run['run']}/llm_rubrics.parquet" if wants_rubrics(config) else None,
        **({"llm_win_rate_skipped": True} if skipped else {}),
    }


def llm_outputs(config: dict, kind: str) -> list[str]:
    """Every run's output of one kind ('llm_win_rate' or 'llm_rubrics'), sorted."""
    cells = reference_cells(config)
    return sorted({p for r in all_runs(config) if (p := llm_paths(config, r, cells)[kind])})


def skipped_notice(config: dict) -> str | None:
    """The line the plan prints about runs that get no win rate (no reference run at their ratio and seed)."""
    cells = reference_cells(config)
    skipped = sorted(
        {
            (r["method"], r["poison_ratio"], r["seed"])
            for r in all_runs(config)
            if llm_paths(config, r, cells).get("llm_win_rate_skipped")
        }
    )
    if not skipped:
        return None
    ref = reference(config)
    return (
        f"judge.llm: no win rate vs {ref} for {len(skipped)} run(s) where {ref} does not run at the same "
        "poison ratio and seed (listed in the report): " + ", ".join(f"{m} P={p:g} seed {s}" for m, p, s in skipped)
    )
