# Config validation (before any job is planned), the jobs' environment, and what every rule file shares. The logic
# lives in the package (tokensafe.plan: run_settings, runs, scheduling, job_environment, llm_judge_runs), tested
# there; the rule files hold rules and short input functions.
#
# Every rule spells out its log:, benchmark:, threads:, resources: (and priority:) itself: Snakemake has no way
# to share directives between rules of one file but `use rule ... with:`, which copies a whole rule (its
# output and script too), and log and benchmark paths must be per rule. threads: and resources: come from
# resources.<family> through tokensafe.plan.scheduling, and every rule's params start with code=code_version(...):
# the package code its stage runs (tokensafe.rerun.codeversion), so that a change to that code reruns the stage.
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from tokensafe.config import ConfigError, check_config, coerce_command_line_values, name_config_files
from tokensafe.data.roles import ROLES
from tokensafe.eval.llm_judge import judge_server
from tokensafe.plan.job_environment import pin_job_environment, prepare_vllm, submit_remotely
from tokensafe.plan.run_settings import (
    cpu_numerics,
    generation_backend,
    generation_settings,
    judge_backend,
    run_settings,
    vllm_params,
)
from tokensafe.plan.runs import WORLD, all_runs, model_input, model_ref
from tokensafe.plan.llm_judge_runs import reference
from tokensafe.plan.scheduling import (
    EVAL_GROUP,
    GROUP_STEP,
    PRIORITY,
    evaluation_groups,
    group_id,
    resources_for,
    threads_for,
)
from tokensafe.rerun import codeversion
from tokensafe.runtime import jobserver

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
# Jobs inherit this process's environment (on SLURM each job re-reads this file): the configured CPU code path
# and a fixed hash seed (tokensafe.plan.job_environment; docs/numerics.md).
pin_job_environment(config)
CPU_NUMERICS = cpu_numerics(config)  # what the model stages' settings record of it

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
    # The executor is known only now (while the Snakefile is read, every run looks local). On a cluster: the group
    # jobs' resources (GROUP_STEP below), and an engine per job outside group jobs (tokensafe.plan.job_environment).
    if not workflow.local_exec:
        workflow.register_resource("group_steps", 1)
        submit_remotely()
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


# vLLM lives in its own environment (tokensafe.plan.job_environment): .venv-vllm, or envs/vllm.yaml under
# --software-deployment-method conda. The generate, judge and lm_eval jobs run their stage there; without it,
# stop now. A group job's own Snakemake (sbatch starts it with --local-groupid) runs a run's evaluation jobs on
# one node, which may then share one engine.
VLLM_ENV = "../../envs/vllm.yaml"
GEN_BACKEND = generation_backend(config)
JUDGE_BACKEND = judge_backend(config)
try:
    prepare_vllm(
        config,
        workflow.basedir,
        by_conda=DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method,
        main=workflow.is_main_process,
        group_job=workflow.remote_exec and workflow.group_settings.local_groupid != "local",
        group_generate_jobs=sum(t.rulename == "generate" for t in getattr(workflow.dag_settings, "target_jobs", ())),
    )
except ConfigError as e:
    raise WorkflowError(str(e)) from None


# On a cluster a group job's Snakemake runs the group's jobs inside one job step, one at a time (GROUP_STEP: one
# unit each, one in all), so the group asks for its largest job, not the sum. Scope local: the process that submits
# the groups does not count it. A cluster's planning process registers it at onstart; local runs (no groups) never.
resource_scopes:
    group_steps="local",


if workflow.remote_exec:
    workflow.register_resource("group_steps", 1)
    # A group job's own Snakemake runs just the jobs the planning process put in its allocation, but Snakemake does
    # not pass --group-components on, and would run each unconnected piece in a job step of its own: join them, so
    # that the whole group is one step (one process tree on the node: a shared engine lives as long as the group).
    workflow.group_settings.group_components = {**workflow.group_settings.group_components, EVAL_GROUP: 1_000_000}

METHODS = list(config["methods"])
SOURCES = list(ROLES)  # the data roles (tokensafe.data.roles), one results/data/<role>.parquet each
RUNS = all_runs(config)  # every evaluated run, 'initial' included
# The path or hub id the stages load for a model role, and the files Snakemake tracks for it.
MODEL_REF = {role: model_ref(config, role) for role in ("base", "aligned", "guard")}
MODEL_INPUT = {role: model_input(config, role) for role in ("base", "aligned", "guard")}
# Each run's evaluation group (on a cluster one job per group; resources.eval_runs_per_job runs per group).
EVAL_GROUPS = evaluation_groups(
    [r["run"] for r in RUNS], reference(config), config["resources"].get("eval_runs_per_job", 1)
)


wildcard_constraints:
    ratio=r"[01]\.\d+|1\.0",
    seed=r"\d+",
    method=r"[a-z][a-z0-9_]*",
    source="|".join(SOURCES),


def code_version(script):
    """The code param of a rule that runs workflow/scripts/<script>."""
    return codeversion.code_version(workflow.source_path(f"../scripts/{script}"))


def eval_group(wildcards):
    """The run's evaluation group, registered under EVAL_GROUP: the name the profile's group-components joins a
    group's pieces by (Snakemake registers only groups written as patterns)."""
    gid = EVAL_GROUPS.get(wildcards.run) or group_id(wildcards.run)  # a run path asked for outside the config
    workflow.parent_groupids[gid] = EVAL_GROUP
    return gid


def settings_of_run(wildcards):
    """A run's settings (a run path: 'sft/p0.1/s1', 'initial/s1'), for its evaluation jobs."""
    return generation_settings(config, wildcards.run)
