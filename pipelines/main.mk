# 1. Main comparison (paper 7.1): losses x configurations x layers x lambda grid, one baseline per model
# family; per (configuration, layer, loss) the Pareto front over every lambda run's Pareto checkpoints,
# evaluated on test. Also the unguided baselines at each configuration's attribution and layer.

$(eval $(call DATA_RULE,multilabel,1.0))

base_dir = $(RUNS)/base/$(1)
main_dir = $(RUNS)/main/$(1)/$(2)/$(3)/lam$(4)
# run directories of one (config, layer, loss) over the lambda grid
main_dirs = $(foreach x,$(call grid,$(1),$(3),$(2)),$(call main_dir,$(1),$(2),$(3),$(x)))
main_result = $(RESULTS)/main/$(1)-$(2)-$(3).json
base_result = $(RESULTS)/main/base-$(1)-$(2).json

# The baselines: one per family used anywhere.
FAMILIES := $(sort $(foreach c,$(S_configs) $(S_ablation_config),$(call fam_of,$(c))))
$(foreach f,$(FAMILIES),$(eval $(call TRAIN_RUN,$(call base_dir,$(f)),$(DATA_MAIN),$(f),$(S_data_seed))))

$(foreach c,$(S_configs),$(foreach y,$(S_layers),$(foreach l,$(S_losses),$(foreach x,$(call grid,$(c),$(l),$(y)),\
  $(eval $(call GUIDE_RUN,$(call main_dir,$(c),$(y),$(l),$(x)),$(call base_dir,$(call fam_of,$(c))),$(DATA_MAIN),$(c),$(l),$(y),$(x),$(S_data_seed),))))))

# $(call main_results,CONFIGS,LAYERS,LOSSES)
main_results = $(foreach c,$(1),$(foreach y,$(2),$(call base_result,$(c),$(y)) $(foreach l,$(3),$(call main_result,$(c),$(y),$(l)))))

$(foreach c,$(S_configs),$(foreach y,$(S_layers),\
  $(eval $(call EVAL_RULE,$(call base_result,$(c),$(y)),$(call base_dir,$(call fam_of,$(c)))/summary.json,\
    $(call base_dir,$(call fam_of,$(c)))/checkpoints/best_f1.pt --data $(DATA_MAIN) --attribution $(call attr_of,$(c)) --layer $(y),main))\
  $(foreach l,$(S_losses),\
    $(eval $(call EVAL_RULE,$(call main_result,$(c),$(y),$(l)),$(addsuffix /summary.json,$(call main_dirs,$(c),$(y),$(l))),\
      --pareto $(call main_dirs,$(c),$(y),$(l)) --data $(DATA_MAIN) --attribution $(call attr_of,$(c)) --layer $(y),main)))))

MAIN_RESULTS := $(call main_results,$(S_configs),$(S_layers),$(S_losses))
main: $(MAIN_RESULTS)

# Figures: per configuration and layer, Energy against L1 at the ablation lambda index.
figure = $(RESULTS)/figures/$(1)-$(2)-energy-vs-l1.png
define FIGURE_RULE
$(call figure,$(1),$(2)): $(call main_dir,$(1),$(2),energy,$(call lam_at,$(1),energy,$(2),$(S_ablation_lambda_index)))/summary.json $(call main_dir,$(1),$(2),l1,$(call lam_at,$(1),l1,$(2),$(S_ablation_lambda_index)))/summary.json
	@echo "[$(GOAL) +$(elapsed)] explain -> $$@"
	@mkdir -p $$(@D)
	@set -o pipefail; $(MGKIT) explain $(call main_dir,$(1),$(2),energy,$(call lam_at,$(1),energy,$(2),$(S_ablation_lambda_index)))/checkpoints/best_f1.pt \
	  --data $(DATA_MAIN) --split test --n $(S_explain_n) \
	  --compare $(call main_dir,$(1),$(2),l1,$(call lam_at,$(1),l1,$(2),$(S_ablation_lambda_index)))/checkpoints/best_f1.pt --out $$@ $(call stream,$$(@:.png=.log),explain)
	@rm -f $$(@:.png=.log).out
endef
$(foreach c,$(S_configs),$(foreach y,$(S_layers),$(eval $(call FIGURE_RULE,$(c),$(y)))))
FIGURES := $(foreach c,$(S_configs),$(foreach y,$(S_layers),$(call figure,$(c),$(y))))
figures: $(FIGURES)

.PHONY: main figures
