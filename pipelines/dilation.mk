# 3. Dilated boxes (paper 7.3): training boxes grown by p (each side by p*w, p*h: `--dilate`),
# evaluation on the original boxes; p = 0 is the main run.

dil_dir = $(RUNS)/dilation/$(1)/d$(2)-lam$(call abl_lam,$(1))
dil_result = $(RESULTS)/dilation/$(ABL_C)-$(ABL_Y)-$(1)-d$(2).json
$(foreach l,$(S_ablation_losses),$(foreach p,$(S_dilation),\
  $(eval $(call GUIDE_RUN,$(call dil_dir,$(l),$(p)),$(ABL_BASE),$(DATA_MAIN),$(ABL_C),$(l),$(ABL_Y),$(call abl_lam,$(l)),$(S_data_seed),--dilate $(p)))\
  $(eval $(call EVAL_RULE,$(call dil_result,$(l),$(p)),$(call dil_dir,$(l),$(p))/summary.json,\
    --pareto $(call dil_dir,$(l),$(p)) --data $(DATA_MAIN) --attribution $(call attr_of,$(ABL_C)) --layer $(ABL_Y),dilation))))
$(foreach l,$(S_ablation_losses),\
  $(eval $(call EVAL_RULE,$(call dil_result,$(l),0),$(call abl_main_dir,$(l))/summary.json,\
    --pareto $(call abl_main_dir,$(l)) --data $(DATA_MAIN) --attribution $(call attr_of,$(ABL_C)) --layer $(ABL_Y),dilation)))

DILATION_RESULTS := $(foreach l,$(S_ablation_losses),$(foreach p,0 $(S_dilation),$(call dil_result,$(l),$(p))))
dilation: $(DILATION_RESULTS)
.PHONY: dilation
