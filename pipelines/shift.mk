# 5. Distribution shift (paper 7.6, Table 1): the birds task, conventional (bird type; mask inside
# the box) and reversed (place; mask outside), boxes for S_shift_bbox_frac of the training images,
# baseline vs Energy vs L1, one baseline and guided pair per training seed (tables: mean +- std);
# lambda: the configuration's grid value at the ablation index (calibrated on the multilabel data).

$(foreach t,$(S_shift_tasks),$(eval $(call DATA_RULE,$(t),$(S_shift_bbox_frac))))
shift_data = $(call data_file,$(1),$(S_shift_bbox_frac))
# guided runs carry their lambda in the name, so that a changed grid makes new runs
shift_dir = $(RUNS)/shift/$(1)/$(2)/$(3)-s$(4)$(if $(filter base,$(3)),,-lam$(call lam_at,$(1),$(3),$(S_shift_layer),$(S_ablation_lambda_index)))
shift_result = $(RESULTS)/shift/$(1)-$(2)-$(3)-s$(4).json

# $(call SHIFT_SET,CONFIG,TASK,SEED)
define SHIFT_SET
$(eval $(call TRAIN_RUN,$(call shift_dir,$(1),$(2),base,$(3)),$(call shift_data,$(2)),$(call fam_of,$(1)),$(3),$(S_shift_base_epochs)))
$(eval $(call SHIFT_RULE,$(call shift_result,$(1),$(2),base,$(3)),$(call shift_dir,$(1),$(2),base,$(3))/summary.json,\
  $(call shift_dir,$(1),$(2),base,$(3))/checkpoints/best_f1.pt,$(call shift_data,$(2))))
$(foreach l,$(S_shift_losses),\
  $(eval $(call GUIDE_RUN,$(call shift_dir,$(1),$(2),$(l),$(3)),$(call shift_dir,$(1),$(2),base,$(3)),$(call shift_data,$(2)),$(1),$(l),$(S_shift_layer),$(call lam_at,$(1),$(l),$(S_shift_layer),$(S_ablation_lambda_index)),$(3),))\
  $(eval $(call SHIFT_RULE,$(call shift_result,$(1),$(2),$(l),$(3)),$(call shift_dir,$(1),$(2),$(l),$(3))/summary.json,\
    $(call shift_dir,$(1),$(2),$(l),$(3))/checkpoints/best_f1.pt,$(call shift_data,$(2)),$(call shift_dir,$(1),$(2),base,$(3))/checkpoints/best_f1.pt)))
endef
# $(call shift_results,CONFIG,TASKS,SEEDS)
shift_results = $(foreach t,$(2),$(foreach s,$(3),$(foreach l,base $(S_shift_losses),$(call shift_result,$(1),$(t),$(l),$(s)))))

$(foreach t,$(S_shift_tasks),$(foreach s,$(S_shift_seeds),$(eval $(call SHIFT_SET,$(S_shift_config),$(t),$(s)))))
SHIFT_RESULTS := $(call shift_results,$(S_shift_config),$(S_shift_tasks),$(S_shift_seeds))
shift: $(SHIFT_RESULTS)
.PHONY: shift
