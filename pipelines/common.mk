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
# Roots of real data sets (DATASET=voc | coco; WB_ROOT and CUB_ROOT add the shift experiment).
VOC_ROOT ?=
COCO_ROOT ?=
WB_ROOT ?=
CUB_ROOT ?=

TAG := $(DATASET)-$(SCALE)
DATA_DIR ?= data/$(TAG)
RUNS ?= runs/$(TAG)
RESULTS ?= results/$(TAG)
# (both overridable: the miniature pipeline test brings its own scale file)
SCALE_YAML ?= pipelines/scales/$(SCALE).yaml
JOBS_MK ?= build/jobs-$(TAG).mk
PIPELINE_GOALS := _paper-tables _demo paper-tables demo plan plan-log main annotations dilation depth shift segmentation figures
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

# Without Waterbirds roots, real data sets skip the shift experiment.
SKIPPED := $(if $(filter-out synthetic,$(DATASET)),$(if $(and $(WB_ROOT),$(CUB_ROOT)),,shift))
PAPER_EXPERIMENTS = $(filter-out $(SKIPPED),$(EXPERIMENTS))

# The jobs are read only when a pipeline goal needs them (so that `make help` or `make test` neither
# need nor build the generated file), after checking the variables the data set needs.
# Any goal but these is a pipeline goal or one of its files (runs/..., results/...).
OTHER_GOALS := help install test test-long bench $(STAMP)
ifneq ($(filter-out $(OTHER_GOALS),$(MAKECMDGOALS)),)
ifeq ($(filter synthetic voc coco,$(DATASET)),)
$(error error: DATASET=$(DATASET) is not one of synthetic, voc, coco)
endif
ifeq ($(wildcard $(SCALE_YAML)),)
$(error error: SCALE=$(SCALE): no $(SCALE_YAML) (scales: $(notdir $(basename $(wildcard pipelines/scales/*.yaml)))))
endif
ifeq ($(DATASET)$(VOC_ROOT),voc)
$(error error: DATASET=voc needs VOC_ROOT=DIR (the VOCdevkit/VOC2007 directory))
endif
ifeq ($(DATASET)$(COCO_ROOT),coco)
$(error error: DATASET=coco needs COCO_ROOT=DIR (with annotations/ and the image folders))
endif
ifeq ($(filter local slurm,$(LAUNCHER)),)
$(error error: LAUNCHER=$(LAUNCHER) is not one of local, slurm)
endif
ifneq ($(SKIPPED),)
$(info [$(GOAL)] DATASET=$(DATASET): the shift experiment is skipped; WB_ROOT=DIR and CUB_ROOT=DIR (Waterbirds) enable it)
endif
include $(JOBS_MK)
endif

$(JOBS_MK): $(SCALE_YAML) $(wildcard mgkit/pipeline/*.py) | $(STAMP)
	@$(BIN)/python -m mgkit.pipeline.planner $(SCALE_YAML) --dataset $(DATASET) --out $@
