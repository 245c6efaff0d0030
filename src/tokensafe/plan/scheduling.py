"""What each job asks of the machine: threads, memory, run time and GPUs per resource family (config key
``resources.<family>``), and the order jobs start in when cores are few."""

from __future__ import annotations

# Scheduling order when cores are few (Snakemake starts the highest-priority ready job first): the world's base
# and aligned models gate every model job; the TOSS / PACT / baseline preparation chains gate their fine-tunes
# (TOSS-Pro's rounds are the longest chain); fine-tunes gate evaluation. The guard trains early on one core so
# that the judges never wait for it. Generation and judging come last, so a run ends on short jobs that keep
# every core busy. Order only: results do not change.
PRIORITY = {"world": 10, "prep": 5, "guard": 3, "finetune": 2, "generate": 1}


def resources_for(config: dict, family: str) -> dict:
    """A rule's ``resources:`` from resources.<family> (defaults: 4000 MB, 60 minutes, no GPU)."""
    r = config["resources"].get(family, {})
    return {"mem_mb": r.get("mem_mb", 4000), "runtime": r.get("runtime", 60), "gpu": r.get("gpus", 0)}


def threads_for(config: dict, family: str) -> int:
    """A rule's ``threads:`` from resources.<family>.threads (default 1); Snakemake exports it as OMP_NUM_THREADS."""
    return config["resources"].get(family, {}).get("threads", 1)
