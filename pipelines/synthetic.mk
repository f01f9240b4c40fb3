# The paper's pipeline on the built-in synthetic data (prepare -> train -> guide -> evaluate -> tables).
DATA ?= data
SYNTH := $(DATA)/synth.h5

$(SYNTH): $(STAMP)
	$(MGKIT) prepare synthetic --out $@ --force --quiet

paper-tables: $(SYNTH)
	$(MGKIT) inspect $(SYNTH)
	@echo "paper-tables: only the prepare stage exists so far; train, guide, evaluate and tables are not built yet."
