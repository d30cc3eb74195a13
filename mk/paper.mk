# How the paper's artefacts are made. Their targets (one per row of neuralode/paper/registry.py)
# are in mk/artefacts.mk, which make writes from the registry. Each takes SCALE=smoke (CPU,
# minutes), SCALE=cpu (the paper's claims on a 2-core CPU) or SCALE=paper (the full recipe, GPU)
# and writes under outputs/paper/; ARGS goes to the script (`python -m neuralode.paper.<name> --help`).
# make sdenet's out-of-distribution set: animal_mnist (offline) or svhn.
OOD ?= animal_mnist

# $(call timed,command): run a paper target's command and record its wall time, status, commit
# (neuralode.source.source_commit, as runs record theirs) and how many training runs it trained or
# reused (their folders: <target>-<scale>.runs) in outputs/paper/timings/<target>-<scale>.json under
# $NEURALODE_ROOT or here (REPORT.md's wall-time table); fails as it failed. The run list is
# gathered in a .part file and both files are replaced at the end, so an interrupted target leaves
# the last record whole.
timed = @timings=$${NEURALODE_ROOT:-.}/outputs/paper/timings; mkdir -p $$timings; runs=$$timings/$@-$(SCALE).runs; \
	commit=$$($(PY) -c 'from neuralode.source import source_commit; print(source_commit())') || commit=unknown; \
	: > $$runs.part; start=$$EPOCHREALTIME; status=ok; NEURALODE_RUN_LOG=$$runs.part $(1) || status=failed; end=$$EPOCHREALTIME; \
	printf '{"target": "%s", "scale": "%s", "start": %s, "end": %s, "status": "%s", "commit": "%s", "runs_trained": %s, "runs_reused": %s}\n' \
	  $@ $(SCALE) $$start $$end $$status $$commit $$(grep -c '^trained ' $$runs.part) $$(grep -c '^reused ' $$runs.part) \
	  > $$timings/$@-$(SCALE).json.part && mv $$runs.part $$runs && mv $$timings/$@-$(SCALE).json.part $$timings/$@-$(SCALE).json; \
	[ $$status = ok ]
.PHONY: paper report results

report: install  ## outputs/paper/REPORT.md from the artefacts already made
	$(PY) -m neuralode.paper.report --scale $(SCALE)

# Every family's targets in turn, each allowed to fail without stopping the others; the report
# says which failed. Exit status 1 if any did.
paper: install  ## every paper artefact at SCALE (all families), then outputs/paper/REPORT.md
	@failed=""; for t in $(PAPER_TARGETS); do \
	  $(MAKE) --no-print-directory $$t SCALE=$(SCALE) ARGS= || failed="$$failed $$t"; \
	done; \
	$(PY) -m neuralode.paper.report --scale $(SCALE); \
	if [ -n "$$failed" ]; then echo "failed:$$failed" >&2; exit 1; fi

# What outputs/paper lacks is first taken from the published folder, so that re-making a few
# targets and then `make results` publishes them beside the others as they were.
results: install  ## REPORT.md at SCALE (targets not made here: as published), then copy it, every artefact's md/csv/png (PNGs <= 300 KB) and the wall-time records to docs/results/SCALE/
	$(PY) -m neuralode.paper.report --scale $(SCALE) $(if $(wildcard docs/results/$(SCALE)/.),--restore docs/results/$(SCALE)) --publish docs/results/$(SCALE)
