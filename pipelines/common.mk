# Variables of the pipelines, the checks made before the first job, and the Makefile of jobs that the
# planner writes from the experiment records (mgkit/pipeline/experiments.py) and the scale file.
# Every step is a file target: an interrupted make resumes, an up-to-date target is not recomputed,
# deleting one run recomputes only what depends on it, `make -j N` runs independent jobs side by side.

SHELL := bash
DATASET ?= synthetic
SCALE ?= demo
DEVICE ?= auto
NPROC ?= 1
NODES ?= 1
# Empty: each stage's own default (the data loader picks one for the device); WORKERS=N sets it.
WORKERS ?=
# Where GPU jobs (train, guide, evaluate, shift, explain) run: local | slurm (README "Running on GPUs
# and clusters"). GPUS: the local GPUs to use (default: every visible one); JOBS_PER_GPU: jobs sharing
# one GPU; SLURM_ARGS: passed to sbatch (partition, account, time, qos, constraint, --requeue).
LAUNCHER ?= local
GPUS ?=
JOBS_PER_GPU ?= 1
SLURM_ARGS ?=
# 1: delete a guided run's checkpoints/last.pt (weights + Adam state, only needed to resume or extend
# it) as soon as the run is complete, and its remaining checkpoints once the goal's report is written
# (targets.mk; baselines keep best_f1.pt). 0 keeps everything (e.g. to extend runs or re-evaluate them).
PRUNE ?= 1
# Roots of real data sets (DATASET=voc | coco | waterbirds). The shift experiment (Waterbirds-100) reads
# WB_ROOT (a Waterbirds folder) with CUB_ROOT (bird boxes), or builds it from CUB_ROOT and PLACES_ROOT
# (`mgkit prepare waterbirds-build`); DATASET=waterbirds runs it alone.
VOC_ROOT ?=
COCO_ROOT ?=
WB_ROOT ?=
CUB_ROOT ?=
PLACES_ROOT ?=
WATERBIRDS = $(if $(WB_ROOT),waterbirds --root $(WB_ROOT) --cub-root $(CUB_ROOT),waterbirds-build --cub-root $(CUB_ROOT) --places-root $(PLACES_ROOT) --correlation 1.0)

TAG := $(DATASET)-$(SCALE)
DATA_DIR ?= data/$(TAG)
RUNS ?= runs/$(TAG)
RESULTS ?= results/$(TAG)
# (both overridable: the miniature pipeline test brings its own scale file)
SCALE_YAML ?= pipelines/scales/$(SCALE).yaml
JOBS_MK ?= build/jobs-$(TAG).mk
# The calibrated λ grids of a scale with `calibrate:` (pipelines/scales/paper.yaml).
LAMBDA_FILE := $(RESULTS)/lambda.yaml
PIPELINE_GOALS := _paper-tables _demo _calibrate paper-tables demo plan plan-log main annotations dilation depth shift segmentation figures
GOAL := $(or $(patsubst _%,%,$(firstword $(filter $(PIPELINE_GOALS),$(MAKECMDGOALS)))),make)
# Start of this make (the headers show the time since then).
PIPE_START := $(shell date +%s)
elapsed = $$(( ($$(date +%s) - $(PIPE_START)) / 60 ))m$$(( ($$(date +%s) - $(PIPE_START)) % 60 ))s

RUN_FLAGS = --device $(DEVICE) $(if $(WORKERS),--workers $(WORKERS))
# Every GPU job goes through the launcher (mgkit/pipeline/launch.py), configured from the environment.
LAUNCH := $(BIN)/python -m mgkit.pipeline.launch
export MGKIT_LAUNCHER := $(LAUNCHER)
export MGKIT_DEVICE := $(DEVICE)
export MGKIT_GPUS := $(GPUS)
export MGKIT_JOBS_PER_GPU := $(JOBS_PER_GPU)
export MGKIT_NODES := $(NODES)
export MGKIT_SLURM_ARGS := $(SLURM_ARGS)

# Without Waterbirds roots, VOC and COCO skip the shift experiment; DATASET=waterbirds runs only it.
WB_ROOTS := $(if $(CUB_ROOT),$(or $(WB_ROOT),$(PLACES_ROOT)))
SKIPPED := $(if $(filter voc coco,$(DATASET)),$(if $(WB_ROOTS),,shift))
PAPER_EXPERIMENTS = $(if $(filter waterbirds,$(DATASET)),shift,$(filter-out $(SKIPPED),$(EXPERIMENTS)))

# The jobs are read only when a pipeline goal needs them (so that `make help` or `make test` neither
# need nor build the generated file), after checking the variables the data set needs.
# Any goal but these is a pipeline goal or one of its files (runs/..., results/...).
OTHER_GOALS := help install test test-long bench $(STAMP)
ifneq ($(filter-out $(OTHER_GOALS),$(MAKECMDGOALS)),)
ifeq ($(filter synthetic voc coco waterbirds,$(DATASET)),)
$(error error: DATASET=$(DATASET) is not one of synthetic, voc, coco, waterbirds)
endif
ifeq ($(wildcard $(SCALE_YAML)),)
$(error error: SCALE=$(SCALE): no $(SCALE_YAML) (scales: $(notdir $(basename $(wildcard pipelines/scales/*.yaml)))))
endif
ifeq ($(DATASET)$(VOC_ROOT),voc)
$(error error: DATASET=voc needs VOC_ROOT=DIR (the VOCdevkit folder, holding VOC2007/))
endif
ifeq ($(DATASET)$(COCO_ROOT),coco)
$(error error: DATASET=coco needs COCO_ROOT=DIR (with annotations/ and the image folders))
endif
ifeq ($(DATASET)$(WB_ROOTS),waterbirds)
$(error error: DATASET=waterbirds needs CUB_ROOT=DIR and either WB_ROOT=DIR (a Waterbirds folder) or PLACES_ROOT=DIR (Places365, to build it))
endif
ifeq ($(DATASET)$(if $(filter demo _demo,$(MAKECMDGOALS)),+demo),waterbirds+demo)
$(error error: DATASET=waterbirds runs the shift experiment alone: make paper-tables (or make shift), not make demo)
endif
ifneq ($(and $(filter-out synthetic,$(DATASET)),$(or $(WB_ROOT),$(PLACES_ROOT))),)
ifeq ($(CUB_ROOT),)
$(error error: $(if $(WB_ROOT),WB_ROOT,PLACES_ROOT) needs CUB_ROOT=DIR (CUB_200_2011, with its segmentations) for the shift experiment)
endif
endif
# every root given must exist (one line naming it, before any job)
ROOTS_CHECKED := $(foreach v,VOC_ROOT COCO_ROOT WB_ROOT CUB_ROOT PLACES_ROOT,$(if $(filter-out synthetic,$(DATASET)),$(if $($(v)),$(if $(wildcard $($(v))),,$(error error: $(v)=$($(v)) does not exist))))))
ifeq ($(filter local slurm,$(LAUNCHER)),)
$(error error: LAUNCHER=$(LAUNCHER) is not one of local, slurm)
endif
ifeq ($(SKIPPED)$(SKIP_SAID)$(MAKE_RESTARTS),shift)
$(info [$(GOAL)] DATASET=$(DATASET): the shift experiment is skipped; WB_ROOT=DIR and CUB_ROOT=DIR (Waterbirds), or CUB_ROOT=DIR and PLACES_ROOT=DIR (to build it), enable it)
endif
include $(JOBS_MK)
# A scale that calibrates λ (`calibrate:`, SCALE=paper): `make paper-tables` / `make demo` make
# $(LAMBDA_FILE) first (`_calibrate`: the baselines and pipelines/calibrate_lambda.py), then re-plan with
# it (Makefile). Any other goal that would guide with the scale file's guesses is refused (a dry run
# `make -n` only says so).
ifeq ($(CALIBRATED)$(wildcard $(LAMBDA_FILE)),0)
ifneq ($(filter-out paper-tables demo _calibrate plan plan-log $(LAMBDA_FILE),$(MAKECMDGOALS)),)
ifeq ($(findstring n,$(firstword -$(MAKEFLAGS))),)
$(error error: SCALE=$(SCALE) guides with λ calibrated on its baselines, and $(LAMBDA_FILE) does not exist yet: run make paper-tables (or make $(LAMBDA_FILE)) first)
else
$(info [$(GOAL)] dry run: λ grids are $(SCALE_YAML)'s until $(LAMBDA_FILE) is calibrated)
endif
endif
endif
endif

$(JOBS_MK): $(SCALE_YAML) $(wildcard mgkit/pipeline/*.py) $(wildcard $(LAMBDA_FILE)) | $(STAMP)
	@$(BIN)/python -m mgkit.pipeline.planner $(SCALE_YAML) --dataset $(DATASET) --lambda-file $(LAMBDA_FILE) --out $@
