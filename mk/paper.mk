# Paper artefacts of the MNIST family (issue 4) and `make paper`, which runs every family's.
# Each target takes SCALE=smoke (CPU, minutes), SCALE=cpu (the paper's claims on a 2-core CPU) or SCALE=paper (the full recipe, GPU) and writes
# under outputs/paper/; ARGS goes to the script (see `python -m neuralode.paper.<name> --help`).
PAPER_TARGETS += table1 memory fig1 fig2 fig3
.PHONY: table1 memory fig1 fig2 fig3 paper report results

table1: install  ## Table 1 (MNIST: MLP, ResNet, RK-Net, ODE-Net) at SCALE, training what is missing -> outputs/paper/table1.md
	$(PY) -m neuralode.paper.table1 --train --scale $(SCALE) $(ARGS)

memory: install  ## training-step memory vs depth: ResNet O(L), RK-Net O(L~), ODE-Net O(1) -> outputs/paper/memory.md, .png
	$(PY) -m neuralode.paper.memory --scale $(SCALE) $(ARGS)

fig1: install  ## Figure 1: a toy ResNet's steps vs an ODE-Net's vector field -> outputs/paper/fig1.png
	$(PY) -m neuralode.paper.fig1 --scale $(SCALE) $(ARGS)

fig2: install  ## Figure 2: one adjoint solve, state forward and adjoint backward with its jumps -> outputs/paper/fig2.png
	$(PY) -m neuralode.paper.fig2 --scale $(SCALE) $(ARGS)

fig3: install  ## Figure 3: NFE statistics of the SCALE ODE-Net run (trained or reused) -> outputs/paper/fig3.png
	$(PY) -m neuralode.paper.fig3 --scale $(SCALE) $(ARGS)

report: install  ## outputs/paper/REPORT.md from the artefacts already made
	$(PY) -m neuralode.paper.report --scale $(SCALE)

# Every family's targets in turn, each timed (timings/<target>.json) and allowed to fail
# without stopping the others; the report says which failed. Exit status 1 if any did.
paper: install  ## every paper artefact at SCALE (all families), then outputs/paper/REPORT.md
	@mkdir -p outputs/paper/timings
	@failed=""; for t in $(PAPER_TARGETS); do \
	  start=$$EPOCHREALTIME; status=ok; \
	  $(MAKE) --no-print-directory $$t SCALE=$(SCALE) ARGS= || { status=failed; failed="$$failed $$t"; }; \
	  printf '{"target": "%s", "scale": "%s", "start": %s, "end": %s, "status": "%s"}\n' \
	    $$t $(SCALE) $$start $$EPOCHREALTIME $$status > outputs/paper/timings/$$t.json; \
	done; \
	$(PY) -m neuralode.paper.report --scale $(SCALE); \
	if [ -n "$$failed" ]; then echo "failed:$$failed" >&2; exit 1; fi

results: install  ## REPORT.md at SCALE, then copy it and every artefact's md/csv/png (PNGs <= 300 KB) to docs/results/SCALE/
	$(PY) -m neuralode.paper.report --scale $(SCALE) --publish docs/results/$(SCALE)
