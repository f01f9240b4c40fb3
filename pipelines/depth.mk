# 4. Guidance depth (paper 7.5): the ablation configuration guided at mid1/mid2/mid3/final, its
# Pareto front kept and evaluated on attributions at the input; training time per epoch is in each
# run's summary (note: under `make -j N` runs share the CPU, so compare times from one make -j1 run).
# The input point is the main run.

DEPTH_L := $(S_depth_loss)
depth_dir = $(RUNS)/depth/$(DEPTH_L)/$(1)-lam$(call lam_at,$(ABL_C),$(DEPTH_L),$(1),$(S_ablation_lambda_index))
depth_result = $(RESULTS)/depth/$(ABL_C)-$(DEPTH_L)-$(1).json
$(foreach y,$(S_depth_layers),\
  $(eval $(call GUIDE_RUN,$(call depth_dir,$(y)),$(ABL_BASE),$(DATA_MAIN),$(ABL_C),$(DEPTH_L),$(y),$(call lam_at,$(ABL_C),$(DEPTH_L),$(y),$(S_ablation_lambda_index)),$(S_data_seed),\
    --eval-layer input --eval-attribution $(call attr_of,$(ABL_C))))\
  $(eval $(call EVAL_RULE,$(call depth_result,$(y)),$(call depth_dir,$(y))/summary.json,\
    --pareto $(call depth_dir,$(y)) --data $(DATA_MAIN) --attribution $(call attr_of,$(ABL_C)) --layer input,depth)))
$(eval $(call EVAL_RULE,$(call depth_result,input),$(call main_dir,$(ABL_C),input,$(DEPTH_L),$(call lam_at,$(ABL_C),$(DEPTH_L),input,$(S_ablation_lambda_index)))/summary.json,\
  --pareto $(call main_dir,$(ABL_C),input,$(DEPTH_L),$(call lam_at,$(ABL_C),$(DEPTH_L),input,$(S_ablation_lambda_index))) --data $(DATA_MAIN) --attribution $(call attr_of,$(ABL_C)) --layer input,depth))

DEPTH_RESULTS := $(foreach y,input $(S_depth_layers),$(call depth_result,$(y)))
depth: $(DEPTH_RESULTS)
.PHONY: depth
