# 2. Limited annotations (paper 7.2): the ablation configuration (B-cos, input) guided with Energy and
# L1 when only a fraction of training images has boxes; the full-annotation point is the main run.

ABL_C := $(S_ablation_config)
ABL_Y := $(S_ablation_layer)
ABL_BASE = $(call base_dir,$(call fam_of,$(ABL_C)))
abl_main_dir = $(call main_dir,$(ABL_C),$(ABL_Y),$(1),$(call abl_lam,$(1)))

$(foreach f,$(S_annotations),$(eval $(call DATA_RULE,multilabel,$(f))))
ann_dir = $(RUNS)/annotations/$(1)/f$(2)-lam$(call abl_lam,$(1))
ann_result = $(RESULTS)/annotations/$(ABL_C)-$(ABL_Y)-$(1)-f$(2).json
$(foreach l,$(S_ablation_losses),$(foreach f,$(S_annotations),\
  $(eval $(call GUIDE_RUN,$(call ann_dir,$(l),$(f)),$(ABL_BASE),$(call data_file,multilabel,$(f)),$(ABL_C),$(l),$(ABL_Y),$(call abl_lam,$(l)),$(S_data_seed),))\
  $(eval $(call EVAL_RULE,$(call ann_result,$(l),$(f)),$(call ann_dir,$(l),$(f))/summary.json,\
    --pareto $(call ann_dir,$(l),$(f)) --data $(DATA_MAIN) --attribution $(call attr_of,$(ABL_C)) --layer $(ABL_Y),annotations))))
# the 100 % point: the main run at the same lambda, evaluated alone
$(foreach l,$(S_ablation_losses),\
  $(eval $(call EVAL_RULE,$(call ann_result,$(l),1.0),$(call abl_main_dir,$(l))/summary.json,\
    --pareto $(call abl_main_dir,$(l)) --data $(DATA_MAIN) --attribution $(call attr_of,$(ABL_C)) --layer $(ABL_Y),annotations)))

ANNOTATION_RESULTS := $(foreach l,$(S_ablation_losses),$(foreach f,$(S_annotations) 1.0,$(call ann_result,$(l),$(f))))
annotations: $(ANNOTATION_RESULTS)
.PHONY: annotations
