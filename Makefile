# Two entry points: `make run` (embedded default DAG) and `make test` (test suite).
# Both create .venv if missing and install the pinned dependencies, torch first so that
# nothing pulls a CUDA build of torch.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint dryrun bench clean

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

dryrun: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -n

test: setup lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -rs

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

clean:
	rm -rf results logs benchmarks .snakemake
