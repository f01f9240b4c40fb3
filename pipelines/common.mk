# Shared variables, data preparation and rule templates of the pipelines (included by the Makefile).
# Every step is a file target: an interrupted make resumes, an up-to-date target is not recomputed,
# deleting one run recomputes only what depends on it, `make -j N` runs independent runs side by side.

SHELL := bash
DATASET ?= synthetic
SCALE ?= demo
DEVICE ?= auto
NPROC ?= 1
WORKERS ?= 0
# 1: delete a guided run's checkpoints/last.pt (weights + Adam state, only needed to resume or extend
# it) as soon as the run is complete, and its remaining checkpoints once the goal's report is written
# (targets.mk; baselines keep best_f1.pt). 0 keeps everything (e.g. to extend runs or re-evaluate them).
PRUNE ?= 1
# Roots of real data sets (only for DATASET=voc | coco | waterbirds).
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
SCALE_MK ?= build/pipeline-$(SCALE).mk
GOAL := $(or $(patsubst _%,%,$(firstword $(filter _paper-tables _demo paper-tables demo main annotations dilation depth shift segmentation figures,$(MAKECMDGOALS)))),make)
# Start of this make (the headers show the time since then).
PIPE_START := $(shell date +%s)
elapsed = $$$$(( ($$$$(date +%s) - $(PIPE_START)) / 60 ))m$$$$(( ($$$$(date +%s) - $(PIPE_START)) % 60 ))s

# The grid's values live in the YAML; read them only when a pipeline goal needs them (so that
# `make help` or `make test` neither need nor build the generated file).
PIPELINE_GOALS := _paper-tables _demo paper-tables demo main annotations dilation depth shift segmentation figures
ifneq ($(filter $(PIPELINE_GOALS) data/% runs/% results/% build/%,$(MAKECMDGOALS)),)
ifeq ($(wildcard $(SCALE_YAML)),)
$(error SCALE=$(SCALE): no $(SCALE_YAML) (scales: $(notdir $(basename $(wildcard pipelines/scales/*.yaml)))))
endif
include $(SCALE_MK)
endif

$(SCALE_MK): $(SCALE_YAML) pipelines/mkvars.py | $(STAMP)
	@mkdir -p $(@D)
	@$(BIN)/python pipelines/mkvars.py $< > $@.tmp && mv $@.tmp $@

# train/guide through torchrun when NPROC > 1.
TRAIN_CLI := $(if $(filter-out 1,$(NPROC)),$(BIN)/torchrun --standalone --nproc_per_node $(NPROC) -m mgkit,$(MGKIT))
RUN_FLAGS = --device $(DEVICE) --workers $(WORKERS)

# configuration name -> family, attribution (vanilla-ixg -> vanilla, ixg)
fam_of = $(word 1,$(subst -, ,$(1)))
attr_of = $(word 2,$(subst -, ,$(1)))
model_of = $(S_family_$(call fam_of,$(1))_model)
# lambda grid of (configuration, loss, layer): the configuration's own (lambda_by_config in the
# YAML) or the default one; lam_at picks its i-th value
grid = $(or $(S_lambda_by_config_$(1)_$(2)_$(3)),$(S_lambda_$(2)_$(3)))
lam_at = $(word $(4),$(call grid,$(1),$(2),$(3)))
abl_lam = $(call lam_at,$(S_ablation_config),$(1),$(S_ablation_layer),$(S_ablation_lambda_index))

# ---------------------------------------------------------------------------------------- progress
# Every job prints one header line and streams the stage's own progress lines (plain lines when not
# on a terminal), indented, while a copy goes to the job's log file.
JOBS :=
GUIDED :=
BASELINES :=
job_no = $(words x $(JOBS))
# $(call stream,LOG,LABEL): end of a pipe that keeps stdout in LOG.out, appends stderr (the progress
# lines) to LOG and shows them prefixed with LABEL (runs of `make -j N` interleave).
stream = 2>&1 >$(1).out | tee -a $(1) | sed -u 's|^|    [$(2)] |'

# ------------------------------------------------------------------------------------------- data
# $(call prepare_cmd,OUT,TASK,BBOX_FRAC): TASK multilabel | birds | birds-place
define prepare_cmd
$(if $(filter synthetic,$(DATASET)),$(MGKIT) prepare synthetic --task $(2) --size $(S_data_size) \
  --train $(S_data_train) --val $(S_data_val) --test $(S_data_test),$(if $(filter birds%,$(2)),$(MGKIT) prepare waterbirds \
  --root $(WB_ROOT) --cub-root $(CUB_ROOT) --task $(if $(filter birds-place,$(2)),place,bird) --size $(S_data_size),$(MGKIT) prepare $(DATASET) \
  --root $(or $(VOC_ROOT)$(COCO_ROOT),$(error DATASET=$(DATASET) needs VOC_ROOT=... or COCO_ROOT=...)) --size $(S_data_size))) \
  --bbox-frac $(3) --seed $(S_data_seed) --out $(1) --force
endef

# $(DATA_DIR)/TASK-fFRAC.h5
define DATA_RULE
$(DATA_DIR)/$(1)-f$(2).h5: | $(STAMP)
	@echo "[$(GOAL) +$(elapsed)] prepare $(1) data, $(2) of training boxes -> $$@"
	@mkdir -p $$(@D)
	@set -o pipefail; $(call prepare_cmd,$$@,$(1),$(2)) $(call stream,$$@.log,$(1) data)
	@rm -f $$@.log.out
endef
data_file = $(DATA_DIR)/$(1)-f$(2).h5
DATA_MAIN := $(call data_file,multilabel,1.0)

# --------------------------------------------------------------------------------------- runs
# $(call TRAIN_RUN,DIR,DATA,FAMILY,SEED[,EPOCHS]) (EPOCHS default: the family's base_epochs)
define TRAIN_RUN
JOBS += $(1)
BASELINES += $(1)
$(1)/summary.json: $(2)
	@echo "[$(GOAL) +$(elapsed)] train $(call fam_of,$(3)) baseline ($(S_family_$(3)_model), $(or $(5),$(S_family_$(3)_base_epochs)) epochs) -> $(1) (job $(job_no) of $$(words $$(JOBS)))"
	@mkdir -p $(1)
	@set -o pipefail; $(TRAIN_CLI) train --data $(2) --model $(S_family_$(3)_model) --epochs $(or $(5),$(S_family_$(3)_base_epochs)) \
	  --lr $(S_family_$(3)_lr) --batch-size $(S_family_$(3)_batch) --seed $(4) $(RUN_FLAGS) --out $(1) --json $(call stream,$(1)/log.txt,job $(job_no))
	@mv $(1)/log.txt.out $$@
endef

# $(call GUIDE_RUN,DIR,BASE_DIR,DATA,CONFIG,LOSS,LAYER,LAMBDA,SEED,EXTRA_FLAGS)
define GUIDE_RUN
JOBS += $(1)
GUIDED += $(1)
$(1)/summary.json: $(2)/summary.json $(3)
	@echo "[$(GOAL) +$(elapsed)] guide $(4) $(5)/$(6) λ=$(7) $(9) -> $(1) (job $(job_no) of $$(words $$(JOBS)))"
	@mkdir -p $(1)
	@set -o pipefail; $(TRAIN_CLI) guide --from $(2)/checkpoints/best_f1.pt --data $(3) --loss $(5) \
	  --attribution $(call attr_of,$(4)) --layer $(6) --lambda $(7) --epochs $(S_family_$(call fam_of,$(4))_guide_epochs) \
	  --lr $(S_family_$(call fam_of,$(4))_lr) --batch-size $(S_family_$(call fam_of,$(4))_batch) --seed $(8) $(9) \
	  $(RUN_FLAGS) --out $(1) --json $(call stream,$(1)/log.txt,job $(job_no))
	@mv $(1)/log.txt.out $$@
	$(if $(filter 1,$(PRUNE)),@rm -f $(1)/checkpoints/last.pt)
endef

# ---------------------------------------------------------------------------------- evaluation
# $(call EVAL_RULE,OUT,DEPS,ARGS,EXPERIMENT): `mgkit evaluate ARGS` on the test split
define EVAL_RULE
$(1): $(2)
	@echo "[$(GOAL) +$(elapsed)] evaluate -> $(1)"
	@mkdir -p $$(@D)
	@set -o pipefail; $(MGKIT) evaluate $(3) --split test --threshold-split val --experiment $(4) --out $(1) $(call stream,$(1:.json=.log),$(notdir $(1:.json=)))
	@rm -f $(1:.json=.log).out
endef

# $(call SHIFT_RULE,OUT,DEPS,CKPT,DATA,BASELINE_CKPT)
define SHIFT_RULE
$(1): $(2)
	@echo "[$(GOAL) +$(elapsed)] shift -> $(1)"
	@mkdir -p $$(@D)
	@set -o pipefail; $(MGKIT) shift $(3) --data $(4) $(if $(5),--baseline $(5)) --experiment shift --out $(1) $(call stream,$(1:.json=.log),$(notdir $(1:.json=)))
	@rm -f $(1:.json=.log).out
endef

# $(call TABLES_RULE,REPORT,RESULTS,TABLES_DIR,FIGURES)
define TABLES_RULE
$(1): $(2) $(4)
	@echo "[$(GOAL) +$(elapsed)] tables -> $(3)/, $(1)"
	@set -o pipefail; $(MGKIT) tables $(2) --out $(3) --report $(1) $(call stream,$(1:.md=.log),tables)
	@rm -f $(1:.md=.log).out
endef
