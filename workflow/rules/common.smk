# Config validation (before any job is planned), model references and small input functions.
import json
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from tokensafe.config import (
    ConfigError,
    check_config,
    classify_model_ref,
    coerce_command_line_values,
    method_recipe,
    name_config_files,
    ratio_tag,
    settings_hash,
)
from tokensafe.eval.llm_judge import judge_server
from tokensafe.rerun import codeversion
from tokensafe.runtime import jobserver
from tokensafe.data.roles import ROLES
from tokensafe.runtime.numerics import numerics_label, pin_cpu_numerics

try:
    # --config values arrive as strings (--config seeds=[1,2] gives ["1", "2"]): type them by the schema first.
    coerce_command_line_values(config, workflow.source_path("../schemas/config.schema.yaml"))
    # The data checks (overlap, prompt lengths: tokensafe.data.checks) once, in the process that plans the jobs.
    _notices = []
    check_config(
        config,
        workflow.source_path("../schemas/config.schema.yaml"),
        notices=_notices,
        data_checks=workflow.is_main_process,
    )
except ConfigError as e:
    # Name the config file(s) in use and the keys --config set: the message's first line says which file is wrong.
    raise WorkflowError(
        name_config_files(
            str(e),
            workflow.overwrite_configfiles or workflow.configfiles,
            workflow.config_settings.config,
        )
    ) from None
for _line in _notices:
    print(_line, file=sys.stderr)
validate(config, "../schemas/config.schema.yaml", set_default=True)
# Jobs inherit this process's environment (on SLURM each job re-reads this file), so every stage's
# CPU arithmetic takes the configured code path: same config and seed, same bytes on the same machine
# (what holds across CPU kinds: tokensafe.runtime.numerics and docs/numerics.md).
pin_cpu_numerics(config["cpu_numerics"])
# A fixed hash seed in every job (and in the job server, hence its children): set iteration orders, e.g. the
# LoRA target_modules that peft writes to adapter_config.json, are then the same in every process.
os.environ["PYTHONHASHSEED"] = "0"
# What the hashed settings record: the mode and the environment it sets (a changed pin reruns the model work).
CPU_NUMERICS = numerics_label(config["cpu_numerics"])

# Local runs start their stage jobs from a fork server that has already imported torch, transformers and
# peft (~4-5 s saved per job; tokensafe.runtime.jobserver says what it keeps the same). TOKENSAFE_JOB_SERVER=off
# turns it off; remote executors (SLURM) never start it, and their jobs run in their own processes. Its socket
# is in a private directory of its own with a per-run secret; onstart records the path here.
JOB_SERVER = {}
# A local run's LLM-judge jobs share one local judge server (judge.llm.server transformers / vllm), stopped
# below and by its watcher when this process is gone (tokensafe.eval.llm_judge.judge_server). Its state folder (the
# servers' ports and the run's key for them) is a fresh private directory made at onstart; without one (remote
# executors, --no-hooks) each job starts a server of its own, with its own key.
JUDGE_SERVERS = {}


onstart:
    if workflow.local_exec and workflow.is_main_process and LLM_LOCAL:  # (llm_judge.smk)
        JUDGE_SERVERS["dir"] = os.environ[judge_server.ENV_DIR] = judge_server.new_state_dir()
        os.environ[judge_server.ENV_OWNER] = str(os.getpid())
    if workflow.local_exec and workflow.is_main_process and os.environ.get(jobserver.ENV_SOCKET) != "off":
        JOB_SERVER["socket"] = jobserver.start("logs/jobserver.log")


onsuccess:
    jobserver.stop(JOB_SERVER.get("socket"))
    judge_server.stop_all(JUDGE_SERVERS.get("dir"))


onerror:
    jobserver.stop(JOB_SERVER.get("socket"))
    judge_server.stop_all(JUDGE_SERVERS.get("dir"))


# vLLM pins its own torch and transformers, so it lives in its own environment: .venv-vllm (`make vllm`), whose
# interpreter generation.vllm.python names (relative to this repository), or envs/vllm.yaml under
# --software-deployment-method conda. The generate and judge jobs run their stage there; without it, stop now.
VLLM_ENV = "../../envs/vllm.yaml"
GEN_BACKEND = config["generation"]["backend"]
_judge_backend = config["judge"]["guard"].get("backend", "generation")
JUDGE_BACKEND = GEN_BACKEND if _judge_backend == "generation" else _judge_backend
# utility_benchmarks.backend vllm scores with lm-eval's vLLM model, in the same environment.
_VLLM_USERS = {
    "generation.backend": GEN_BACKEND,
    "judge.guard.backend": JUDGE_BACKEND,
    "utility_benchmarks.backend": (config.get("utility_benchmarks") or {}).get("backend", "hf"),
}
USE_VLLM = "vllm" in _VLLM_USERS.values()
if USE_VLLM:
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    from tokensafe.eval.generation.vllm_backend import (
        ENV_ENGINE,
        ENV_PYTHON,
        VLLM_MISSING,
        vllm_available,
        vllm_env_problem,
    )

    if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method and not vllm_available():
        _python = os.path.join(workflow.basedir, config["generation"]["vllm"]["python"])
        _problem = vllm_env_problem(os.path.abspath(_python), config["generation"]["vllm"]["python"])
        if _problem:
            _key = next(k for k, v in _VLLM_USERS.items() if v == "vllm")  # the first setting that needs vLLM
            raise WorkflowError(f"{_key} = vllm: {_problem}. {VLLM_MISSING}")
        # Jobs inherit it (SLURM jobs re-read this file); not a param: which interpreter runs vLLM reruns nothing.
        os.environ[ENV_PYTHON] = os.path.abspath(_python)
    # One engine for every generate job (tokensafe.eval.generation.vllm_server) needs the jobs on one machine: local runs.
    # Not a param either: per_run and shared write the same bytes (tests/test_vllm_engine.py).
    os.environ[ENV_ENGINE] = config["generation"]["vllm"]["engine"] if workflow.local_exec else "per_run"


def vllm_params():
    """The vLLM engine settings that change outputs: neither the interpreter nor whether the engine is shared."""
    return {k: v for k, v in config["generation"]["vllm"].items() if k not in ("python", "engine")}


def generation_params():
    """What generation reads from config: the vLLM engine settings only with that backend."""
    gen = {k: v for k, v in config["generation"].items() if k != "vllm"}
    if GEN_BACKEND == "vllm":
        gen["vllm"] = vllm_params()
    if config["data"]["truncate_long_prompts"]:  # only when on: the default reruns nothing (tokensafe.data.lengths)
        gen["truncate_long_prompts"] = True
    return gen


# The extra classifier judges' keys: read by the judge_classifier rule only (evaluate.smk), never by judge.
CLASSIFIER_KEYS = ("classifiers", "classifier_models", "classifier_batch_size")


def judge_params():
    """What judging reads from config besides its backend (a param of its own, JUDGE_BACKEND): not the extra
    classifiers' keys (their own rule) nor judge.llm (the LLM-judge jobs' own section, llm_judge.smk)."""
    judge = {k: v for k, v in config["judge"].items() if k not in CLASSIFIER_KEYS and k != "llm"}
    return {**judge, "guard": {k: v for k, v in config["judge"]["guard"].items() if k != "backend"}}


WORLD = "results/world"
SEEDS = [int(s) for s in config["seeds"]]
METHODS = list(config["methods"])


def method_ratios(method):
    """Poison ratios a method runs at: its entry in method_poison_ratios, else poison_ratios."""
    return [ratio_tag(p) for p in config.get("method_poison_ratios", {}).get(method, config["poison_ratios"])]


def method_seeds(method):
    """Seeds a method runs at: its entry in method_seeds, else seeds ('initial' runs at every seed)."""
    return [int(s) for s in config.get("method_seeds", {}).get(method, SEEDS)]


# Every ratio some method uses (the fine-tuning sets to build).
RATIOS = sorted(
    {r for m in METHODS for r in method_ratios(m)} | {ratio_tag(p) for p in config["poison_ratios"]}, key=float
)
SOURCES = list(ROLES)  # the data roles (tokensafe.data.roles), one results/data/<role>.parquet each


wildcard_constraints:
    ratio=r"[01]\.\d+|1\.0",
    seed=r"\d+",
    method=r"[a-z][a-z0-9_]*",
    source="|".join(SOURCES),


def code_version(script):
    """Version of the package code a stage script runs (tokensafe.rerun.codeversion), for the rule's params."""
    return codeversion.code_version(workflow.source_path(f"../scripts/{script}"))


def model_ref(role):
    """The path or hub id the stages load for a model role (a 'hub:' marker stays: tokensafe.modelref.load_name
    strips it where the model is loaded)."""
    ref = config["models"][role]
    return f"{WORLD}/{role}" if ref == "embedded" else ref


def model_input(role):
    """Files Snakemake must track for a model: the embedded folder or an existing local path."""
    ref = config["models"][role]
    kind = classify_model_ref(ref)
    return {"embedded": [f"{WORLD}/{role}"], "local": [ref], "hub": []}[kind]


def resources_for(family):
    r = config["resources"].get(family, {})
    return {"mem_mb": r.get("mem_mb", 4000), "runtime": r.get("runtime", 60), "gpu": r.get("gpus", 0)}


# Scheduling order when cores are few (Snakemake starts the highest-priority ready job first): the
# world's base and aligned models gate every model job; the TOSS / PACT / baseline preparation chains
# gate their fine-tunes (TOSS-Pro's rounds are the longest chain); fine-tunes gate evaluation. The
# guard trains early on one core so that the judges never wait for it. Generation and judging come
# last, so a run ends on short jobs that keep every core busy. Order only: results do not change.
PRIORITY = {"world": 10, "prep": 5, "guard": 3, "finetune": 2, "generate": 1}


def threads_for(family):
    return config["resources"].get(family, {}).get("threads", 1)


# Method families register here (in their own rule files): the extra inputs their fine-tuning job
# needs, and the config section whose settings define the method (hashed into every result row).
FINETUNE_INPUTS = {}  # method -> wildcards -> {name: path}
METHOD_SETTINGS = {"sft": lambda: {}}  # method -> () -> dict


def finetune_inputs(wildcards):
    data = {
        "data": f"results/data/finetune/p{wildcards.ratio}/s{wildcards.seed}.parquet",
        "aligned": model_input("aligned"),
    }
    extra = FINETUNE_INPUTS.get(wildcards.method)
    return {**data, **(extra(wildcards) if extra else {})}


def run_settings(method, ratio, seed):
    """Everything that determines a fine-tuned model; hashed into every result row."""
    return {
        "method": method,
        "poison_ratio": float(ratio),
        "seed": int(seed),
        "n_finetune": config["n_finetune"],
        "models": {k: config["models"][k] for k in ("base", "aligned")},
        "world_seed": config["world_seed"] if config["models"]["aligned"] == "embedded" else None,
        "data": {k: config["data"][k] for k in ("task", "poison")},
        "prompt_template": config["prompt_template"],
        "max_length": config["max_length"],
        "lora": config["finetune"]["lora"],
        "recipe": method_recipe(config["finetune"], method),
        "dtype": config["models"].get("dtype", "auto"),
        "cpu_numerics": CPU_NUMERICS,
        "method_settings": METHOD_SETTINGS[method](),
    }


def stage_settings(method_settings):
    """Settings of a preparation stage that scores or trains on the aligned model (TOSS, PACT, baselines)."""
    base = run_settings("sft", 0.0, 0)
    keys = ("models", "world_seed", "prompt_template", "max_length", "dtype", "cpu_numerics")
    return {**{k: base[k] for k in keys}, "method_settings": method_settings}


def initial_settings(seed):
    return {
        "method": "initial",
        "seed": int(seed),
        "models": {"aligned": config["models"]["aligned"]},
        "world_seed": config["world_seed"] if config["models"]["aligned"] == "embedded" else None,
        "prompt_template": config["prompt_template"],
        "dtype": config["models"].get("dtype", "auto"),
        "cpu_numerics": CPU_NUMERICS,
    }


def parse_run(run):
    """'sft/p0.1/s1' -> ('sft', '0.1', '1'); 'initial/s1' -> ('initial', None, '1')."""
    parts = run.split("/")
    if parts[0] == "initial":
        return "initial", None, parts[1][1:]
    return parts[0], parts[1][1:], parts[2][1:]


def generation_settings(wildcards):
    method, ratio, seed = parse_run(wildcards.run)
    return initial_settings(seed) if method == "initial" else run_settings(method, ratio, seed)


def all_runs():
    runs = [dict(method="initial", poison_ratio=float(r), seed=s, run=f"initial/s{s}") for r in RATIOS for s in SEEDS]
    runs += [
        dict(method=m, poison_ratio=float(r), seed=s, run=f"{m}/p{r}/s{s}")
        for m in METHODS
        for r in method_ratios(m)
        for s in method_seeds(m)
    ]
    return runs
