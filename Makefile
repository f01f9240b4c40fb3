# mgkit: `make paper-tables` runs every experiment on the built-in synthetic data, `make demo` a short
# subset, `make test` the tests. Pipeline variables: DATASET, SCALE, DEVICE, NPROC (README "Pipelines").
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
MGKIT := $(BIN)/mgkit
STAMP := $(VENV)/.installed

.PHONY: help install test test-long bench paper-tables demo plan plan-log
.DEFAULT_GOAL := help

help:
	@echo "make paper-tables   set up, then run every experiment on the built-in synthetic data (one job per core)"
	@echo "make demo           set up, then a short demonstration (one model, Energy vs L1, birds shift)"
	@echo "make test           set up, then run the test suite"
	@echo "make test-long      set up, then the studies of minutes (worst-group accuracy under guidance)"
	@echo "make bench          speed and memory figures"
	@echo "make plan           per experiment: jobs done / running / failed / pending, GPU-hours and disk"
	@echo "variables: DATASET=synthetic|voc|coco SCALE=demo|paper|tiny DEVICE=auto|cpu|cuda NPROC=N PRUNE=1|0"
	@echo "           LAUNCHER=local|slurm GPUS=0,1,.. JOBS_PER_GPU=k NODES=n SLURM_ARGS='...' WORKERS=N"

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

# One pytest-xdist worker per core (each single-threaded, tests/conftest.py); TEST_JOBS=0 runs in-process.
TEST_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
test: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_JOBS)

# Studies of minutes (tests marked `long`), kept out of `make test`.
test-long: $(STAMP)
	MGKIT_LONG_TESTS=1 $(BIN)/pytest -q -m long

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_prepare.py --sizes 200 5000
	$(BIN)/python benchmarks/bench_loader.py
	$(BIN)/python benchmarks/bench_train.py

# The pipeline goals run independent jobs side by side: one per GPU slot on a GPU machine (GPUS,
# JOBS_PER_GPU, NPROC), one per core on a CPU machine (each single-threaded: the runs are small, two
# one-thread processes beat one two-thread process), up to SLURM_QUEUE jobs in SLURM's queue with
# LAUNCHER=slurm (single-threaded too, as torchrun's processes: the same numbers as LAUNCHER=local). `make -jN paper-tables` sets N itself; PARALLEL=1 runs one job at a time.
SLURM_QUEUE ?= 32
PARALLEL ?= $(if $(filter slurm,$(LAUNCHER)),$(SLURM_QUEUE),$(shell MGKIT_DEVICE=$(DEVICE) MGKIT_GPUS=$(GPUS) MGKIT_JOBS_PER_GPU=$(or $(JOBS_PER_GPU),1) $(PY) -c 'import sys; sys.path.insert(0, "."); from mgkit.pipeline.launch import default_parallel; print(default_parallel($(or $(NPROC),1)))' 2>/dev/null || nproc 2>/dev/null || echo 1))
# A scale that calibrates λ (SCALE=paper) first makes its calibration file (`_calibrate`: baselines,
# pipelines/calibrate_lambda.py), then the goal in a second make that plans from it (elsewhere
# `_calibrate` has nothing to do).
SUB_MAKE = $(MAKE) --no-print-directory $(if $(filter -j%,$(MAKEFLAGS)),,-j$(PARALLEL)) $(if $(filter-out 1,$(PARALLEL)),OMP_NUM_THREADS=1) SKIP_SAID=1
paper-tables demo: | $(STAMP)
	$(eval PARALLEL := $(PARALLEL))+@$(SUB_MAKE) _calibrate && $(SUB_MAKE) _$@

# Per experiment: jobs done, running, failed, pending; GPU-hours and disk for the scale and data set.
plan: | $(STAMP)
	@$(BIN)/python -m mgkit.pipeline.status --scale $(SCALE_YAML) --dataset $(DATASET) \
	  --runs $(RUNS) --results $(RESULTS) --data-dir $(DATA_DIR)
# The last lines of one job's log: make plan-log JOB=main/vanilla-ixg/input/energy/lam0.01
plan-log: | $(STAMP)
	@$(BIN)/python -m mgkit.pipeline.status --scale $(SCALE_YAML) --dataset $(DATASET) \
	  --runs $(RUNS) --results $(RESULTS) --data-dir $(DATA_DIR) --log $(JOB)

include pipelines/common.mk
ifneq ($(EXPERIMENTS),)
include pipelines/targets.mk
endif
