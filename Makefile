# mgkit: `make paper-tables` runs the main job on the built-in synthetic data, `make test` the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
MGKIT := $(BIN)/mgkit
STAMP := $(VENV)/.installed

.PHONY: help install test bench paper-tables
.DEFAULT_GOAL := help

help:
	@echo "make paper-tables   set up, then run the paper's pipeline on built-in synthetic data"
	@echo "make test           set up, then run the test suite"
	@echo "make bench          speed and memory figures"

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_prepare.py --sizes 200 5000
	$(BIN)/python benchmarks/bench_train.py

include pipelines/synthetic.mk
