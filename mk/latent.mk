# Paper artefacts of the latent ODE family (issue 5): Table 2 and Figures 7-9. Each target takes
# SCALE=smoke (CPU, minutes), SCALE=cpu (the paper's claims on a 2-core CPU) or SCALE=paper (the full recipe) and writes under outputs/paper/;
# runs go to outputs/paper/runs/<scale>/ and are reused by every target that needs them.
PAPER_TARGETS += table2 fig7 fig8 fig9
.PHONY: table2 fig7 fig8 fig9

table2: install  ## Table 2 (spirals: the paper's two RNNs and the latent ODE, n = 30, 50, 100, 3 seeds each at SCALE=cpu; every reading of the metric) at SCALE, training what is missing -> outputs/paper/table2.md
	$(call timed,$(PY) -m neuralode.paper.table2 --train --scale $(SCALE) $(ARGS))

fig7: install  ## Figure 7: Poisson process latent ODE, events and learned intensity -> outputs/paper/fig7.png
	$(call timed,$(PY) -m neuralode.paper.fig7 --scale $(SCALE) $(ARGS))

fig8: install  ## Figure 8: spirals, RNN vs latent ODE and the latent trajectories (n = 30 runs) -> outputs/paper/fig8.png
	$(call timed,$(PY) -m neuralode.paper.fig8 --scale $(SCALE) $(ARGS))

fig9: install  ## Figure 9: trajectories decoded while one dimension of z0 varies -> outputs/paper/fig9.png
	$(call timed,$(PY) -m neuralode.paper.fig9 --scale $(SCALE) $(ARGS))
