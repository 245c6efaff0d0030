# Two entry points: `make run` (embedded default DAG) and `make test` (test suite).
# Both create .venv if missing and install the pinned dependencies, torch first so that
# nothing pulls a CUDA build of torch.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2
STAMP  := $(VENV)/.installed

.PHONY: setup run test dryrun bench clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

run: setup
	$(BIN)/python -m tokensafe.config config.yaml
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES)

dryrun: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -n

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -rs

bench: setup
	$(BIN)/python bench/bench_loss_dump.py
	$(BIN)/python bench/bench_pact_step.py

clean:
	rm -rf results logs benchmarks .snakemake
