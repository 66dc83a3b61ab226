# Every target sets itself up: it creates .venv and installs the package on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
DATA_DIR ?= ../shared/data
EPOCHS ?= 100
LNL_MODEL ?= lnl
REPRO_NAME = $(EPOCHS)ep$(if $(filter-out lnl,$(LNL_MODEL)),_$(LNL_MODEL))
REPRO_DIR = outputs/reproduce_$(REPRO_NAME)
REPRO_ARGS = data.data_dir=$(DATA_DIR) trainer.max_epochs=$(EPOCHS)
REPRO_THREADS ?= $(shell n=$$(nproc); echo $$(( n > 1 ? n / 2 : 1 )))

.DEFAULT_GOAL := help
.PHONY: help install test test-slow train bench reproduce lint format clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev tools

test: $(STAMP) ## Run the test suite (generated fixtures, no network, a few minutes)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) ## Run only the tests marked slow (none is, today)
	$(PY) -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

train: $(STAMP) ## Train baseline and LNL on Colored MNIST side by side; overrides in ARGS="..."
	$(PY) -m lnl_lightning -m experiment=colored_mnist_baseline,colored_mnist $(ARGS)

bench: $(STAMP) ## Training-step throughput: plain, baseline, LNL (official, fused), bare loop
	$(PY) benchmarks/step_throughput.py $(ARGS)

reproduce: $(STAMP) ## Colored MNIST sigma^2 grid x {baseline, LNL} x 3 seeds, then the report (EPOCHS=100, LNL_MODEL=lnl)
	@mkdir -p $(REPRO_DIR)
	@echo "baseline and lnl sweeps side by side, $(REPRO_THREADS) thread(s) each; logs in $(REPRO_DIR)/*.log"
	OMP_NUM_THREADS=$(REPRO_THREADS) $(PY) -m lnl_lightning -m sweep=reproduce model=baseline \
		$(REPRO_ARGS) hydra.sweep.dir=$(REPRO_DIR)/baseline $(ARGS) > $(REPRO_DIR)/baseline.log 2>&1 & \
	OMP_NUM_THREADS=$(REPRO_THREADS) $(PY) -m lnl_lightning -m sweep=reproduce model=$(LNL_MODEL) \
		$(REPRO_ARGS) hydra.sweep.dir=$(REPRO_DIR)/lnl $(ARGS) > $(REPRO_DIR)/lnl.log 2>&1; \
	lnl=$$?; wait $$!; baseline=$$?; test $$lnl -eq 0 && test $$baseline -eq 0
	$(PY) -m lnl_lightning.report $(REPRO_DIR) --out results/colored_mnist_$(REPRO_NAME)

lint: $(STAMP) ## Check style with ruff
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ## Format and fix with ruff
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean: ## Remove caches and build files (keeps .venv, data and outputs)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
