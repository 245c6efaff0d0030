"""What each job asks of the machine: threads, memory, run time and GPUs per resource family (config key
``resources.<family>``), and the order jobs start in when cores are few."""

from __future__ import annotations

# Scheduling order when cores are few (Snakemake starts the highest-priority ready job first): the world's base
# and aligned models gate every model job; the TOSS / PACT / baseline preparation chains gate their fine-tunes
# (TOSS-Pro's rounds are the longest chain); fine-tunes gate evaluation. The guard trains early on one core so
# that the judges never wait for it. Generation and judging come last, so a run ends on short jobs that keep
# every core busy. Order only: results do not change.
PRIORITY = {"world": 10, "prep": 5, "guard": 3, "finetune": 2, "generate": 1}


def resources_for(config: dict, family: str, rule: str | None = None) -> dict:
    """A rule's ``resources:`` from resources.<family>: its gpus, and its mem_mb and runtime (minutes) where the
    config gives a number; ``auto`` (the default) makes them callables of the job's wildcards that return the
    job's estimate from the cost plan with plan.margin (tokensafe.plan.cost). Resources are not rerun triggers:
    a new estimate changes what a job asks for, never whether it runs."""
    r = config["resources"].get(family, {})
    out = {"gpu": r.get("gpus", 0)}
    for key in ("mem_mb", "runtime"):
        value = r.get(key, "auto")
        if value != "auto":
            out[key] = value
        elif rule is None:
            out[key] = {"mem_mb": 4000, "runtime": 60}[key]
        else:
            out[key] = _estimated(config, rule, key)
    return {"mem_mb": out["mem_mb"], "runtime": out["runtime"], "gpu": out["gpu"]}


def _estimated(config: dict, rule: str, key: str):
    from tokensafe.plan.cost import estimator

    def resource(wildcards):
        return estimator(config).resources(rule, wildcards)[key]

    return resource


def threads_for(config: dict, family: str) -> int:
    """A rule's ``threads:`` from resources.<family>.threads (default 1); Snakemake exports it as OMP_NUM_THREADS."""
    return config["resources"].get(family, {}).get("threads", 1)
