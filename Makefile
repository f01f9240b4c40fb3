# mgkit: `make paper-tables` runs every experiment on the built-in synthetic data, `make demo` a short
# subset, `make test` the tests. Pipeline variables: DATASET, SCALE, DEVICE, NPROC (README "Pipelines").
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
MGKIT := $(BIN)/mgkit
STAMP := $(VENV)/.installed

.PHONY: help install test test-long bench paper-tables demo
.DEFAULT_GOAL := help

help:
	@echo "make paper-tables   set up, then run every experiment on the built-in synthetic data (one job per core)"
	@echo "make demo           set up, then a short demonstration (one model, Energy vs L1, birds shift)"
	@echo "make test           set up, then run the test suite"
	@echo "make test-long      set up, then the studies of minutes (worst-group accuracy under guidance)"
	@echo "make bench          speed and memory figures"
	@echo "variables: DATASET=synthetic|voc|coco SCALE=demo|paper|tiny DEVICE=auto|cpu|cuda NPROC=N PRUNE=1|0"

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

# The pipeline goals run independent jobs side by side, one per core, each single-threaded (the runs
# are small: two one-thread processes beat one two-thread process); PARALLEL=1 runs one job at a time.
PARALLEL ?= $(shell nproc 2>/dev/null || echo 1)
paper-tables demo: | $(STAMP)
	@$(MAKE) --no-print-directory -j$(PARALLEL) $(if $(filter-out 1,$(PARALLEL)),OMP_NUM_THREADS=1) _$@

include pipelines/common.mk
ifneq ($(S_configs),)
include pipelines/main.mk pipelines/annotations.mk pipelines/dilation.mk pipelines/depth.mk
include pipelines/shift.mk pipelines/segmentation.mk pipelines/targets.mk
endif
