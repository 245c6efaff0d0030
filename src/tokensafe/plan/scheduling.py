"""What each job asks of the machine: threads, memory, run time and GPUs per resource family (config key
``resources.<family>``), and the order jobs start in when cores are few."""

from __future__ import annotations

# Scheduling order when cores are few (Snakemake starts the highest-priority ready job first): the world's base
# and aligned models gate every model job; the TOSS / PACT / baseline preparation chains gate their fine-tunes
# (TOSS-Pro's rounds are the longest chain); fine-tunes gate evaluation. The guard trains early on one core so
# that the judges never wait for it. Generation and judging come last, so a run ends on short jobs that keep
# every core busy. Generation goes before the other evaluation jobs: in a cluster group job (one after another) every
# generate job then runs while a shared vLLM engine is up, before the jobs that load models of their own. Order
# only: results do not change.
PRIORITY = {"world": 10, "prep": 5, "guard": 3, "finetune": 2, "generate": 1, "evaluate": 0}

# The evaluation jobs of a run (generate, the judges, lm_eval, the LLM judge) are one Snakemake group
# (evaluation_groups): on a cluster they run in one allocation, one after another (docs/slurm.md); local runs
# ignore groups. Every group id is registered under EVAL_GROUP, the name the profile's group-components gives: a
# run's evaluation has unconnected pieces (lm_eval needs only the adapter), which Snakemake submits as one job only
# when group-components joins them.
EVAL_GROUP = "eval"
# A group's jobs run one after another in its allocation (the SLURM plugin starts the group's Snakemake with --jobs 1),
# so the group should ask for its largest job's CPUs, memory and GPUs and the sum of their run times. Snakemake sums
# the jobs of one DAG level that fit together under --resources; every grouped job holds one unit of this resource
# and the profile allows one (scope local: it only splits a group into one-job layers and limits nothing else).
GROUP_STEP = {"group_steps": 1}


# What a job asks for when there is no estimate to go by (no rule name, no table row, a model of unknown size).
FALLBACK = {"runtime": 60, "mem_mb": 4000}


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
            out[key] = FALLBACK[key]
        else:
            out[key] = _estimated(config, rule, key)
    return {"mem_mb": out["mem_mb"], "runtime": out["runtime"], "gpu": out["gpu"]}


def _estimated(config: dict, rule: str, key: str):
    from tokensafe.plan.cost import estimator

    def resource(wildcards):
        return (estimator(config).resources(rule, wildcards) or FALLBACK)[key]

    return resource


def threads_for(config: dict, family: str) -> int:
    """A rule's ``threads:`` from resources.<family>.threads (default 1); Snakemake exports it as OMP_NUM_THREADS."""
    return config["resources"].get(family, {}).get("threads", 1)


def evaluation_groups(runs: list[str], reference: str, runs_per_job: int) -> dict[str, str]:
    """Run path -> the id of its evaluation group: ``runs_per_job`` runs per group, in the order given (duplicates
    once). The reference method's runs (judge.llm.reference) are packed apart from the others: the others' win rates
    read the reference runs' generations, so a group holding both kinds could wait on a group that waits on it. The
    id names the group's first run ('eval_sft-p0.1-s1'), a name SLURM logs and paths can hold."""
    order = list(dict.fromkeys(runs))
    groups = {}
    references = [r for r in order if r.split("/")[0] == reference]
    for kind in (references, [r for r in order if r not in references]):
        for i in range(0, len(kind), runs_per_job):
            chunk = kind[i : i + runs_per_job]
            groups.update(dict.fromkeys(chunk, group_id(chunk[0])))
    return groups


def group_id(run: str) -> str:
    """The id of the evaluation group named after ``run``: 'eval_sft-p0.1-s1'."""
    return f"{EVAL_GROUP}_{run.replace('/', '-')}"
