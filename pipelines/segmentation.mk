# 6. Segmentation (paper 7.4, R3): on-object energy (the share of a map's positive energy on the
# object's segmentation pixels relative to its box) of Energy- against L1-guided models, per
# configuration and layer, from each run at the ablation lambda index (best-F1 checkpoint).

seg_result = $(RESULTS)/segmentation/$(1)-$(2)-$(3).json
$(foreach c,$(S_configs),$(foreach y,$(S_layers),$(foreach l,energy l1,\
  $(eval $(call EVAL_RULE,$(call seg_result,$(c),$(y),$(l)),$(call main_dir,$(c),$(y),$(l),$(call lam_at,$(c),$(l),$(y),$(S_ablation_lambda_index)))/summary.json,\
    $(call main_dir,$(c),$(y),$(l),$(call lam_at,$(c),$(l),$(y),$(S_ablation_lambda_index)))/checkpoints/best_f1.pt --data $(DATA_MAIN) --attribution $(call attr_of,$(c)) --layer $(y),segmentation)))))
SEGMENTATION_RESULTS := $(foreach c,$(S_configs),$(foreach y,$(S_layers),$(foreach l,energy l1,$(call seg_result,$(c),$(y),$(l)))))
segmentation: $(SEGMENTATION_RESULTS)
.PHONY: segmentation
