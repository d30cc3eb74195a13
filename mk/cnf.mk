# Paper artefacts of the continuous normalizing flow family (issue 6). Each target takes
# SCALE=smoke (CPU, minutes), SCALE=cpu (the paper's claims on a 2-core CPU) or SCALE=paper (the full recipe, GPU), trains the runs it needs
# under outputs/paper/runs/<scale>/ (reusing finished ones) and writes under outputs/paper/;
# ARGS goes to the script (see `python -m neuralode.paper.<name> --help`).
PAPER_TARGETS += fig4 fig5 ffjord2d
.PHONY: fig4 fig5 ffjord2d

fig4: install  ## Figure 4: density matching, planar NF (K layers) vs CNF (M units), K=M in {2,8,32} -> outputs/paper/fig4.png, .md, .csv
	$(call timed,$(PY) -m neuralode.paper.fig4 --scale $(SCALE) $(ARGS))

fig5: install  ## Figure 5: noise to data on Two Circles / Two Moons, CNF vs NF at 5..100% of the flow -> outputs/paper/fig5.png
	$(call timed,$(PY) -m neuralode.paper.fig5 --scale $(SCALE) $(ARGS))

ffjord2d: install  ## FFJORD on the eight 2-D toys: learned densities, NFE per solve -> outputs/paper/ffjord2d.png, .md
	$(call timed,$(PY) -m neuralode.paper.ffjord2d --scale $(SCALE) $(ARGS))
