# Every target sets itself up: it creates .venv and installs the package on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
DATA_DIR ?= $(or $(LNL_DATA_DIR),data)
EPOCHS ?= 100
LNL_EPOCHS ?= $(EPOCHS)
COLOR_VARS ?= 0.020 0.025 0.030 0.035 0.040 0.045 0.050
SEEDS ?= 0 1 2
SCRATCH ?= 0
PACK ?= 0
LNL_MODEL ?= lnl
# The overrides that select method $$m: a model yaml, or Gray (the baseline on grey images).
METHOD_SELECT = case $$m in gray) echo model=baseline data.grayscale=true model.method=gray;; \
	*) echo model=$$m;; esac
TRAIN_DIR ?= outputs/train/$(shell date +%Y-%m-%d_%H-%M-%S)
# make train without a schedule of its own: say first that it takes hours on a CPU
TRAIN_WARNING = $(if $(findstring max_epochs,$(ARGS))$(findstring debug=,$(ARGS)),true,echo \
	"make train: baseline and LNL, 100 epochs each: hours on a CPU, minutes on a GPU; \
	ARGS='trainer.max_epochs=2' for a quick look")
COMPARE_JOBS ?= $(shell nproc)
COMPARE_NAME ?= $(EPOCHS)ep
COMPARE_DIR ?= outputs/compare_$(COMPARE_NAME)
COMPARE_REPORT ?= results/compare_colored_mnist_$(COMPARE_NAME)
comma := ,
empty :=
space := $(empty) $(empty)
csv = $(subst $(space),$(comma),$(strip $(1)))
REPRO_NAME ?= $(EPOCHS)+$(LNL_EPOCHS)ep$(if $(filter-out lnl,$(LNL_MODEL)),_$(LNL_MODEL))
REPRO_DIR ?= outputs/reproduce_$(REPRO_NAME)
REPORT_DIR ?= results/colored_mnist_$(REPRO_NAME)
REPRO_THREADS ?= $(shell n=$$(nproc); echo $$(( $(SCRATCH) && n > 1 ? n / 2 : n )))
# One job per (sigma^2, seed), in a folder named after both, so phase 2 finds phase 1's checkpoint.
# PACK=1: each phase's jobs train together as one packed network (README "Packed runs").
REPRO_SWEEP = -m sweep=reproduce data.data_dir=$(DATA_DIR) data.color_var=$(call csv,$(COLOR_VARS)) \
	seed=$(call csv,$(SEEDS)) 'hydra.sweep.subdir=cv$${data.color_var}_seed$${seed}' \
	$(if $(filter 1,$(PACK)),hydra/launcher=packed)
REPRO_RUN = OMP_NUM_THREADS=$(REPRO_THREADS) $(PY) -m lnl_lightning $(REPRO_SWEEP)
WARM_FROM = $(abspath $(REPRO_DIR))/baseline/cv$${data.color_var}_seed$${seed}/checkpoints/last.ckpt

.DEFAULT_GOAL := help
.PHONY: help install test test-slow train bench reproduce compare lint format clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev tools

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
reproduce: $(STAMP) ## Colored MNIST: baseline, then each of METHODS (default lnl) warm-started from it, per sigma^2 x seed; report (EPOCHS, LNL_EPOCHS, COLOR_VARS, SEEDS, METHODS, SCRATCH=1, PACK=1)
	@mkdir -p $(REPRO_DIR)
	@echo "baseline ($(EPOCHS) epochs) then $(METHODS) warm-started ($(LNL_EPOCHS) epochs)$(if $(filter 1,$(SCRATCH)), beside LNL from scratch ($$(($(EPOCHS) + $(LNL_EPOCHS))) epochs)), $(REPRO_THREADS) thread(s) each; logs in $(REPRO_DIR)/*.log"
	{ $(REPRO_RUN) model=baseline trainer.max_epochs=$(EPOCHS) hydra.sweep.dir=$(REPRO_DIR)/baseline \
		$(ARGS) > $(REPRO_DIR)/baseline.log 2>&1; \
	  for m in $(METHODS); do \
	    $(REPRO_RUN) $$($(METHOD_SELECT)) trainer.max_epochs=$(LNL_EPOCHS) 'model.init_from=$(WARM_FROM)' \
		hydra.sweep.dir=$(REPRO_DIR)/$${m}_warm $(ARGS) > $(REPRO_DIR)/$${m}_warm.log 2>&1; \
	  done; } & \
	$(if $(filter 1,$(SCRATCH)),$(REPRO_RUN) model=$(LNL_MODEL) trainer.max_epochs=$$(($(EPOCHS) + $(LNL_EPOCHS))) \
		hydra.sweep.dir=$(REPRO_DIR)/lnl_scratch $(ARGS) > $(REPRO_DIR)/lnl_scratch.log 2>&1;) \
	wait
	$(PY) -m lnl_lightning.report $(REPRO_DIR) --out $(REPORT_DIR)

compare: METHODS ?= baseline lnl blind_eye gray group_dro lff
compare: $(STAMP) ## Colored MNIST: every method of METHODS from scratch, same data and recipe, per sigma^2 x seed; report (EPOCHS, COLOR_VARS, SEEDS, METHODS, COMPARE_JOBS)
	@mkdir -p $(COMPARE_DIR)
	@echo "$(METHODS): $(EPOCHS) epochs each, $(COMPARE_JOBS) at a time, one thread each; logs in $(COMPARE_DIR)/*.log"
	printf '%s\n' $(METHODS) | xargs -P $(COMPARE_JOBS) -I{} sh -c 'case {} in lnl) e=colored_mnist;; *) e=colored_mnist_{};; esac; \
		OMP_NUM_THREADS=1 $(PY) -m lnl_lightning -m experiment=$$e data.data_dir=$(DATA_DIR) \
		data.color_var=$(call csv,$(COLOR_VARS)) seed=$(call csv,$(SEEDS)) trainer.max_epochs=$(EPOCHS) \
		hydra.sweep.dir=$(COMPARE_DIR)/{} "hydra.sweep.subdir=cv\$${data.color_var}_seed\$${seed}" \
		print_config=false $(ARGS) > $(COMPARE_DIR)/{}.log 2>&1 || echo "{} failed: see $(COMPARE_DIR)/{}.log"'
	$(PY) -m lnl_lightning.report $(COMPARE_DIR) --out $(COMPARE_REPORT) --methods $(METHODS)

lint: $(STAMP) ## Check style with ruff
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ## Format and fix with ruff
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean: ## Remove caches and build files (keeps .venv, data and outputs)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
