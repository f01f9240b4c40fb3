# The two goals: `make paper-tables` (every experiment) and `make demo` (one model, Energy vs L1,
# input and final, the birds shift), each ending with tables, plots and the claims report. Their jobs
# and result lists come from the generated Makefile of jobs (pipelines/common.mk).

PAPER_REPORT := $(RESULTS)/paper-tables.md
DEMO_REPORT := $(RESULTS)/demo.md

# $(call done_msg,GOAL,REPORT,TABLES_DIR,FIGURES)
define done_msg
	@echo "[$(1)] done ($(DATASET), SCALE=$(SCALE)):"
	@echo "  claims report   $(2)"
	@echo "  tables, plots   $(3)/"
	@echo "  figures         $(dir $(firstword $(4)))"
	@echo "  runs and logs   $(RUNS)/ (each run's log.txt, metrics.jsonl, summary.json)"
endef

# PRUNE=1: once a goal's report is written, every result and figure that reads its guided runs'
# checkpoints exists, so they go: checkpoints/ (but FILES_TO_KEEP) and the Pareto weights pareto/*.pt
# (pareto/pareto.json, the validation front, stays). A run directory keeps config.yaml,
# metrics.jsonl, log.txt and summary.json, the make target, so nothing is retrained. The demo keeps
# its main runs' best_f1.pt, which paper-tables' segmentation results read. Baselines keep best_f1.pt
# (guidance starts from it) and lose last.pt. $(call prune,GOAL,DIRS,FILES_TO_KEEP,WHAT)
define prune
	$(if $(filter 1,$(PRUNE)),@n=0; for d in $(2); do [ -d "$$d" ] || continue; \
	  if { [ ! -d "$$d/checkpoints" ] || find "$$d/checkpoints" -mindepth 1 $(foreach k,$(3),-not -name $(k)) -print -delete; \
	       [ ! -d "$$d/pareto" ] || find "$$d/pareto" -name '*.pt' -print -delete; } | grep -q .; then n=$$((n+1)); fi; \
	  rmdir "$$d/checkpoints" 2>/dev/null || true; done; \
	  [ $$n = 0 ] || echo "[$(1)] PRUNE=1: deleted the checkpoints of $$n $(4)$(if $(3), but $(3)) (PRUNE=0 keeps all)")
endef

# `make paper-tables` / `make demo` (Makefile) run these with one job per slot.
_paper-tables: $(PAPER_REPORT)
	$(call prune,paper-tables,$(GUIDED),,guided runs)
	$(call prune,paper-tables,$(BASELINES),best_f1.pt,baselines)
	$(call done_msg,paper-tables,$(PAPER_REPORT),$(RESULTS)/tables,$(figures_RESULTS))
_demo: $(DEMO_REPORT)
	$(call prune,demo,$(DEMO_GUIDED),best_f1.pt,guided runs)
	$(call prune,demo,$(DEMO_SHIFT_GUIDED),,guided runs)
	$(call prune,demo,$(BASELINES),best_f1.pt,baselines)
	$(call done_msg,demo,$(DEMO_REPORT),$(RESULTS)/demo-tables,$(demo-figures_RESULTS))

.PHONY: _paper-tables _demo
