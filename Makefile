# Every target sets itself up: it creates .venv and installs the package on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
# TORCH_INDEX=https://download.pytorch.org/whl/cpu: PyTorch's CPU-only wheels, installed first
TORCH_INDEX ?=
PYTEST_ARGS ?=
DATA_DIR ?= $(or $(LNL_DATA_DIR),data)
EPOCHS ?= 100
LNL_EPOCHS ?= $(EPOCHS)
COLOR_VARS ?=
SEEDS ?=
SCRATCH ?= 0
PACK ?= 0
LNL_MODEL ?= lnl
TRAIN_DIR ?= outputs/train/$(shell date +%Y-%m-%d_%H-%M-%S)
# make train without a schedule of its own: say first that it takes hours on a CPU
TRAIN_WARNING = $(if $(findstring max_epochs,$(ARGS))$(findstring debug=,$(ARGS)),true,echo \
	"make train: baseline and LNL, 100 epochs each: hours on a CPU, minutes on a GPU; \
	ARGS='trainer.max_epochs=2' for a quick look")
COMPARE_JOBS ?= $(shell nproc)
# The studies are lnl_lightning/study/protocols.py; these variables become its options.
STUDY_GRID = $(if $(strip $(COLOR_VARS)),--color-vars $(COLOR_VARS)) $(if $(strip $(SEEDS)),--seeds $(SEEDS))
STUDY_DIRS = $(if $(1),--out $(1)) $(if $(2),--report $(2))
# SELECT=unbiased|worst_group|aligned: the selection rule of every run, each validated both ways
SELECT ?=
STUDY_SELECT = $(if $(strip $(SELECT)),selection=$(SELECT) data.val_colors=both)

.DEFAULT_GOAL := help
.PHONY: help install test test-slow train bench reproduce compare lint format clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet torch torchvision --index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev tools (TORCH_INDEX=<PyTorch wheel index>: e.g. the CPU-only wheels)

test: $(STAMP) ## Run the test suite except the slow tests (generated fixtures, no network)
	$(PY) -m pytest -m "not slow" -n auto --dist loadfile $(PYTEST_ARGS)

test-slow: $(STAMP) ## Run only the tests marked slow (the ddp_spawn, submitit and Optuna sweeps, make reproduce and make compare end to end, the fused step across a resume and under DDP, eval on whole splits, val_fraction=0 end to end, the GPU check on CPU)
	$(PY) -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

train: $(STAMP) ## Train baseline and LNL on Colored MNIST side by side, then print their table; overrides in ARGS="..."
	@$(TRAIN_WARNING)
	$(PY) -m lnl_lightning -m experiment=colored_mnist_baseline,colored_mnist data.data_dir=$(DATA_DIR) \
		hydra.sweep.dir=$(TRAIN_DIR) $(ARGS)
	@$(PY) -m lnl_lightning.report $(TRAIN_DIR) > /dev/null && echo "baseline vs LNL ($(TRAIN_DIR)/report.md):" \
		&& sed -n '/^| task_name/,/^$$/p' $(TRAIN_DIR)/report.md

bench: $(STAMP) ## Training-step throughput: plain, baseline, LNL (official, fused), bare loop
	$(PY) benchmarks/step_throughput.py $(ARGS)

reproduce: METHODS ?= $(LNL_MODEL)
reproduce: $(STAMP) ## Colored MNIST: baseline, then each of METHODS (default lnl) warm-started from it, per sigma^2 x seed; report (EPOCHS, LNL_EPOCHS, COLOR_VARS, SEEDS, METHODS, SELECT, SCRATCH=1, PACK=1)
	$(PY) -m lnl_lightning.study reproduce --epochs $(EPOCHS) --lnl-epochs $(LNL_EPOCHS) --methods $(METHODS) \
		$(STUDY_GRID) $(if $(filter 1,$(SCRATCH)),--scratch) $(if $(filter 1,$(PACK)),--pack) \
		$(call STUDY_DIRS,$(REPRO_DIR),$(REPORT_DIR)) -- data.data_dir=$(DATA_DIR) $(STUDY_SELECT) $(ARGS)

compare: METHODS ?= baseline lnl blind_eye gray group_dro lff
compare: $(STAMP) ## Colored MNIST: every method of METHODS from scratch, same data and recipe, per sigma^2 x seed; report (EPOCHS, COLOR_VARS, SEEDS, METHODS, SELECT, COMPARE_JOBS)
	$(PY) -m lnl_lightning.study compare --epochs $(EPOCHS) --methods $(METHODS) --jobs $(COMPARE_JOBS) \
		$(STUDY_GRID) $(call STUDY_DIRS,$(COMPARE_DIR),$(COMPARE_REPORT)) -- data.data_dir=$(DATA_DIR) $(STUDY_SELECT) $(ARGS)

lint: $(STAMP) ## Check style with ruff
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ## Format and fix with ruff
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean: ## Remove caches and build files (keeps .venv, data and outputs)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
