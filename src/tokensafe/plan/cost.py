"""The cost plan: each job's run time and peak memory from its work (:mod:`tokensafe.plan.jobs`) and a throughput
table (``throughput.yaml`` beside this module, a calibrated copy, or ``--throughput FILE``), summed per stage
family; calibration of the table from a finished run's Snakemake benchmark files; the SLURM ``runtime`` and
``mem_mb`` of a job from its estimate with a margin (:func:`job_resources`).

A table row gives, for one stage (a rule, or ``finetune/<method>``, ``generate/vllm``) on one device (cpu, h100,
h200, api): the tokens per second at the parameter count it was measured or estimated at (``params``; another
model's rate scales as params / its params: the FLOPs per token grow with the parameters), a fixed
``overhead_s`` per job (start, model load), the peak host memory (``host_mb``) and GPU memory (``gpu_gb``) as
``fixed + per_b x params in billions`` (+ ``per_ktok_per_b`` x the tokens of one forward pass x params in billions
for activations), and its ``source``: ``measured`` (with machine and date) or ``unmeasured`` (with how it was
derived). Rows of stages without a model (data, report) give ``seconds`` per job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tokensafe.plan.jobs import FAMILIES, RESOURCE_FAMILY, Job
from tokensafe.plan.sizes import model_params

TABLE = Path(__file__).with_name("throughput.yaml")
# The margin of a job's resources over its estimate (config plan.margin; docs/cost-plan.md).
DEFAULT_MARGIN = {"time_factor": 1.5, "time_floor_min": 10, "mem_factor": 1.5, "mem_floor_mb": 1000}


def size_class(params: float) -> str:
    if params < 1e8:
        return "embedded"
    if params < 4e9:
        return "1-3B"
    if params < 1e10:
        return "7-8B"
    return "13B+"


def load_table(path: str | Path | None = None) -> list[dict]:
    """The rows of a throughput table file (the package's by default); a row without its source stops here."""
    path = Path(path) if path else TABLE
    if not path.is_file():
        raise FileNotFoundError(f"throughput table {path}: no such file")
    rows = (yaml.safe_load(path.read_text()) or {}).get("rows") or []
    for i, row in enumerate(rows):
        missing = [k for k in ("stage", "device", "source") if k not in row]
        if missing or row["source"] not in ("measured", "unmeasured"):
            raise ValueError(
                f"{path}: row {i + 1} ({row.get('stage')}): needs stage, device and source "
                f"(measured | unmeasured); missing {missing or ['a valid source']}"
            )
        if row["source"] == "measured" and not (row.get("machine") and row.get("date")):
            raise ValueError(f"{path}: row {i + 1} ({row['stage']}): a measured row names its machine and date")
        if row["source"] == "unmeasured" and not row.get("how"):
            raise ValueError(f"{path}: row {i + 1} ({row['stage']}): an unmeasured row says how it was derived")
    return rows


def merged(base: list[dict], override: list[dict]) -> list[dict]:
    """``override``'s rows replace ``base``'s of the same (stage, device, size class)."""
    key = lambda r: (r["stage"], r["device"], r.get("size", "any"))  # noqa: E731
    over = {key(r) for r in override}
    return [*override, *[r for r in base if key(r) not in over]]


def stage_keys(job: Job, config: dict) -> list[str]:
    """Table stages a job may be estimated by, most specific first."""
    if job.rule == "finetune":
        return [f"finetune/{job.wildcards['method']}", "finetune"]
    backend = None
    if job.rule in ("generate", "pact_safe_responses"):
        backend = config["generation"].get("backend", "transformers")
    elif job.rule == "judge":
        backend = config["judge"]["guard"].get("backend", "generation")
        backend = config["generation"].get("backend", "transformers") if backend == "generation" else backend
    elif job.rule == "lm_eval":
        backend = (config.get("utility_benchmarks") or {}).get("backend", "hf")
    elif job.rule in ("llm_win_rate", "llm_rubrics"):
        backend = config["judge"]["llm"].get("server")
    return [f"{job.rule}/{backend}", job.rule] if backend else [job.rule]


def job_device(job: Job, config: dict, gpu: str) -> str:
    """Where a job runs: the GPU kind where its resource family asks for GPUs, the judge's API for an external LLM
    judge, else the CPU."""
    if job.rule in ("llm_win_rate", "llm_rubrics") and config["judge"]["llm"].get("server") == "external":
        return "api"
    family = resource_family(job.rule, config)
    gpus = (config.get("resources") or {}).get(family, {}).get("gpus", 0)
    return gpu if gpu != "cpu" and gpus > 0 else "cpu"


def resource_family(rule: str, config: dict) -> str:
    if rule in ("llm_win_rate", "llm_rubrics"):
        from tokensafe.plan.llm_judge_runs import local_server

        return "judge" if local_server(config) else "report"
    return RESOURCE_FAMILY[rule]


@dataclass
class Estimate:
    job: Job
    device: str
    seconds: float
    host_mb: float
    gpu_gb: float | None
    row: dict | None  # the table row used (None: no row: the job is counted at 0)
    extrapolated: bool = False  # the row's size class differs from the job's model

    @property
    def unmeasured(self) -> bool:
        return self.row is None or self.row["source"] != "measured" or self.extrapolated


@dataclass
class Planner:
    config: dict
    table: list[dict]
    gpu: str = "cpu"
    params: dict[str, float] = field(default_factory=dict)
    # False for the jobs' own resources: a model whose size the plan cannot read (a local folder without its
    # config.json yet, an unknown hub id) must not stop the workflow; its jobs ask for the fallback request instead.
    strict: bool = True

    def model_size(self, job: Job) -> float:
        if job.model in ("none",):
            return 0.0
        if job.model not in self.params:
            models = self.config["models"]
            if job.model.startswith("classifier:"):
                from tokensafe.plan.runs import classifier_model

                ref = classifier_model(self.config, job.model.split(":", 1)[1])
                self.params[job.model] = model_params(ref)[0]
            elif job.model == "judge":
                path = self.config["judge"]["llm"].get("model_path", "embedded")
                server = self.config["judge"]["llm"].get("server")
                self.params[job.model] = (
                    0.0 if server == "external" else model_params(path, self.config, "judge_model")[0]
                )
            elif job.model == "guard":
                self.params[job.model] = model_params(models["guard"], self.config, "guard_model")[0]
            else:
                self.params[job.model] = model_params(models[job.model], self.config, "model")[0]
        return self.params[job.model]

    def row_for(self, job: Job, device: str, params: float) -> tuple[dict | None, bool]:
        cls = size_class(params) if params else "any"
        for stage in stage_keys(job, self.config):
            rows = [r for r in self.table if r["stage"] == stage and r["device"] == device]
            exact = [r for r in rows if r.get("size", "any") in (cls, "any")]
            if exact:
                return exact[0], False
            if rows:
                return rows[0], True
        return None, False

    def estimate(self, job: Job) -> Estimate:
        device = job_device(job, self.config, self.gpu)
        try:
            params = self.model_size(job)
        except ValueError:
            if self.strict:
                raise
            return Estimate(job, device, 0.0, 0.0, None, None)
        row, extrapolated = self.row_for(job, device, params)
        if row is None:
            return Estimate(job, device, 0.0, 0.0, None, None)
        pb = params / 1e9
        if row.get("seconds") is not None:
            seconds = float(row["seconds"])
        else:
            rate = float(row["tokens_per_s"])
            if params and row.get("params"):
                rate *= float(row["params"]) / params
            seconds = float(row.get("overhead_s", 0)) + job.work / rate
        host = row.get("host_mb") or {}
        host_mb = float(host.get("fixed", 0)) + float(host.get("per_b", 0)) * pb
        gpu_gb = None
        if device not in ("cpu", "api") and row.get("gpu_gb"):
            g = row["gpu_gb"]
            gpu_gb = g.get("fixed", 0) + pb * (g.get("per_b", 0) + g.get("per_ktok_per_b", 0) * job.batch_tokens / 1e3)
        return Estimate(job, device, seconds, host_mb, gpu_gb, row, extrapolated)


# --------------------------------------------------------------------------------------------------
# Resources of one job


def margin(config: dict) -> dict:
    return {**DEFAULT_MARGIN, **((config.get("plan") or {}).get("margin") or {})}


def resources_of(est: Estimate, config: dict) -> dict:
    """SLURM runtime (minutes) and mem_mb from an estimate with the config's margin (plan.margin)."""
    m = margin(config)
    runtime = max(int(m["time_floor_min"]), math.ceil(m["time_factor"] * est.seconds / 60))
    mem_mb = max(int(m["mem_floor_mb"]), math.ceil(m["mem_factor"] * est.host_mb))
    return {"runtime": runtime, "mem_mb": mem_mb}


# --------------------------------------------------------------------------------------------------
# The plan, per family


def summarise(estimates: list[Estimate]) -> list[dict]:
    """One row per stage family (pipeline order) and a total: jobs, work, hours on GPUs and CPUs, peak memory."""
    out = []
    for fam in [*FAMILIES, "total"]:
        es = [e for e in estimates if fam == "total" or e.job.family == fam]
        if not es:
            continue
        gpu_s = sum(e.seconds for e in es if e.device not in ("cpu", "api"))
        out.append(
            {
                "family": fam,
                "jobs": len(es),
                "train_tokens": sum(e.job.train_tokens for e in es),
                "steps": sum(e.job.steps for e in es),
                "gen_tokens": sum(e.job.prompt_tokens + e.job.generated_tokens for e in es),
                "judged_tokens": sum(e.job.judged_tokens for e in es),
                "lm_eval_tokens": sum(e.job.lm_eval_tokens for e in es),
                "gpu_hours": gpu_s / 3600,
                "cpu_hours": sum(e.seconds for e in es if e.device in ("cpu", "api")) / 3600,
                "hours": sum(e.seconds for e in es) / 3600,
                "peak_host_mb": max(e.host_mb for e in es),
                "peak_gpu_gb": max((e.gpu_gb for e in es if e.gpu_gb is not None), default=None),
                "unmeasured": sorted({e.job.rule for e in es if e.unmeasured and e.row is not None}),
                "missing": sorted({e.job.rule for e in es if e.row is None and e.job.rule != "all"}),
            }
        )
    return out


def _num(v: float) -> str:
    if v == 0:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def format_plan(summary: list[dict], gpu: str) -> str:
    on_gpu = gpu != "cpu"
    head = (
        "family",
        "jobs",
        "train tok",
        "steps",
        "prompt+gen tok",
        "judged tok",
        "lm-eval tok",
        *(("GPU-h",) if on_gpu else ()),
        "CPU-h",
        "peak host",
        *(("peak GPU",) if on_gpu else ()),
    )
    hours = lambda h: "-" if h == 0 else f"{h:.3g}"  # noqa: E731
    body = []
    for s in summary:
        body.append(
            (
                s["family"],
                str(s["jobs"]),
                _num(s["train_tokens"]),
                _num(s["steps"]),
                _num(s["gen_tokens"]),
                _num(s["judged_tokens"]),
                _num(s["lm_eval_tokens"]),
                *((hours(s["gpu_hours"]),) if on_gpu else ()),
                hours(s["cpu_hours"]),
                f"{s['peak_host_mb'] / 1024:.1f} GB",
                *((f"{s['peak_gpu_gb']:.0f} GB" if s["peak_gpu_gb"] is not None else "-",) if on_gpu else ()),
            )
        )
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(head), line(tuple("-" * w for w in widths)), *map(line, body)])


def dominant(summary: list[dict], gpu: str, share: float = 0.15) -> list[tuple[str, float]]:
    """The families with at least ``share`` of the hours (GPU-hours on a GPU plan), largest first."""
    key = "gpu_hours" if gpu != "cpu" else "hours"
    fams = [s for s in summary if s["family"] != "total"]
    total = sum(s[key] for s in fams) or 1.0
    ranked = sorted(((s["family"], s[key] / total) for s in fams), key=lambda x: -x[1])
    return [(f, x) for f, x in ranked if x >= share] or ranked[:1]


def user_set(config: dict, family: str, key: str) -> int | None:
    """resources.<family>.<key> when the config gives a number (``auto`` or absent: from the estimate)."""
    value = (config.get("resources") or {}).get(family, {}).get(key, "auto")
    return None if value == "auto" else int(value)


def resource_notes(estimates: list[Estimate], config: dict) -> list[str]:
    """Families whose runtime / mem_mb the config sets below what an estimate asks (with the margin)."""
    short: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for e in estimates:
        if e.row is None or e.job.rule == "all":
            continue
        family = resource_family(e.job.rule, config)
        want = resources_of(e, config)
        for key in ("runtime", "mem_mb"):
            have = user_set(config, family, key)
            if have is not None and have < want[key]:
                short.setdefault((family, key), []).append((have, want[key]))
    return [
        f"resources.{fam}.{key} = {pairs[0][0]} is below the estimate with its margin for {len(pairs)} job(s) "
        f"(up to {max(w for _, w in pairs)}): raise it or set it to auto"
        for (fam, key), pairs in sorted(short.items())
    ]


def format_jobs(estimates: list[Estimate], config: dict) -> str:
    lines = ["job  device  hours  host MB  GPU GB  runtime (min)  mem_mb  source"]
    for e in estimates:
        if e.job.rule == "all":
            continue
        r = resources_of(e, config)
        fam = resource_family(e.job.rule, config)
        rt = user_set(config, fam, "runtime") or r["runtime"]
        mem = user_set(config, fam, "mem_mb") or r["mem_mb"]
        src = "none" if e.row is None else e.row["source"] + (" (other size)" if e.extrapolated else "")
        gpu = f"{e.gpu_gb:.1f}" if e.gpu_gb is not None else "-"
        lines.append(
            f"{e.job.benchmark}  {e.device}  {e.seconds / 3600:.3g}  {e.host_mb:.0f}  {gpu}  {rt}  {mem}  {src}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The resources Snakemake asks for (tokensafe.plan.scheduling.resources_for)


class JobEstimator:
    """Each job's estimate for one config, computed once when the first resource callable runs: Snakemake calls
    the callables of every job while it builds the DAG."""

    def __init__(self, config: dict):
        self.config = config
        self._by_key: dict[str, Estimate] | None = None
        self._by_rule: dict[str, list[Estimate]] = {}

    def _build(self) -> None:
        from tokensafe.plan.jobs import plan_jobs
        from tokensafe.plan.sizes import lengths

        plan = self.config.get("plan") or {}
        table = load_table()
        if plan.get("throughput"):
            table = merged(table, load_table(plan["throughput"]))
        gpu = plan.get("gpu", "h100")
        planner = Planner(self.config, table, gpu, strict=False)
        # Without loading the data files again (planning already did): the catalogue's sizes, limits, the world's
        # lengths, or a finished data card of this run directory.
        card = Path("results/data/card.json")
        import json

        lens = lengths(self.config, None, json.loads(card.read_text()) if card.is_file() else None)
        self._by_key = {}
        for job in plan_jobs(self.config, None, lens):
            est = planner.estimate(job)
            self._by_key[f"{job.rule}:{job.benchmark}"] = est
            self._by_rule.setdefault(job.rule, []).append(est)

    def resources(self, rule: str, wildcards) -> dict | None:
        """{runtime, mem_mb} of one job from its estimate with the margin (the rule's longest job where the plan
        does not know this one); None without an estimate (no table row, a model of unknown size)."""
        from tokensafe.plan.jobs import job_key

        if self._by_key is None:
            self._build()
        est = self._by_key.get(f"{rule}:{job_key(rule, wildcards)}")
        if est is None:
            ests = self._by_rule.get(rule)
            if not ests:
                return None
            est = max(ests, key=lambda e: e.seconds)
        if est.row is None:
            return None
        return resources_of(est, self.config)


_ESTIMATORS: dict[int, JobEstimator] = {}


def estimator(config: dict) -> JobEstimator:
    """The estimator of a config object (one per Snakemake process)."""
    if id(config) not in _ESTIMATORS:
        _ESTIMATORS[id(config)] = JobEstimator(config)
    return _ESTIMATORS[id(config)]
