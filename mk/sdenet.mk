# SDE-Net (issue 15): MNIST uncertainty, SDE-Net against the ResNet and ODE-Net baselines. Takes
# SCALE=smoke|cpu|paper like every paper target; OOD=animal_mnist (offline, default) or svhn (the
# paper's set, needs internet) or synthetic; runs go to outputs/paper/runs/<scale>/ (the baselines'
# are Table 1's).
PAPER_TARGETS += sdenet
OOD ?= animal_mnist
.PHONY: sdenet

sdenet: install  ## SDE-Net vs ResNet and ODE-Net: test error, misclassification and OOD detection (OOD=animal_mnist|svhn) at SCALE -> outputs/paper/sdenet.md
	$(call timed,$(PY) -m neuralode.paper.sdenet --train --scale $(SCALE) --ood $(OOD) $(ARGS))
