# neuralode: every command a researcher needs, on a fresh machine.
# The first target that needs Python creates .venv and installs the package into it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SCALE ?= smoke
ARGS ?=
# The default job of `make run`: the paper's ODE-Net on real MNIST (offline path), one epoch.
RUN_ARGS ?= experiment=mnist_odenet trainer.max_epochs=1

# The paper's artefacts: mk/artefacts.mk is written from neuralode/paper/registry.py (standard
# library only, so plain python3 runs it) whenever the registry changes.
include mk/paper.mk mk/artefacts.mk
mk/artefacts.mk: neuralode/paper/registry.py
	$(PYTHON) neuralode/paper/registry.py make > $@.$$$$.part && mv $@.$$$$.part $@

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast bench bench-ode bench-mnist bench-gradients bench-latent tensorboard clean docs

help:  ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,docs]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install neuralode with its test extras

run: install  ## train the default experiment (ODE-Net on MNIST, 1 epoch); override with RUN_ARGS=...
	$(PY) -m neuralode train $(RUN_ARGS) $(ARGS)

# One test process per core (pytest-xdist): tests write only to their own temporary folders; a
# test module marked xdist_group runs on one worker (its module fixture then runs once).
test: install  ## run the test suite (CPU, one process per core: about 8 minutes on 2 cores)
	$(PY) -m pytest -q -n auto --dist loadgroup $(ARGS)

test-fast: install  ## the suite without tests marked slow (subprocesses, end-to-end runs, sampled repeats): under a minute on 2 cores
	$(PY) -m pytest -q -n auto --dist loadgroup -m "not slow" $(ARGS)

docs: $(VENV)/.installed-docs  ## the documentation site -> site/ (mkdocs build --strict: a broken link or reference fails)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

bench: bench-ode bench-mnist bench-gradients  ## all benchmarks

bench-ode: $(VENV)/.installed-bench  ## ODE core vs torchdiffeq and torchode; vs diffrax's JIT; gradient strategies; adams vs dopri5; radau5 vs scipy on stiff problems; per-sample steps -> outputs/bench/{ode,diffrax,gradient_strategies,adams,stiff,per_sample}.md
	$(PY) scripts/bench_ode.py $(ARGS)
	$(PY) scripts/bench_diffrax.py
	$(PY) scripts/bench_gradient_strategies.py
	$(PY) scripts/bench_adams.py
	$(PY) scripts/bench_stiff.py
	$(PY) scripts/bench_per_sample.py

bench-mnist: install  ## steps/s, NFE and peak memory of the four MNIST models on CPU
	$(PY) scripts/bench_mnist.py $(ARGS)

bench-gradients: install  ## backprop through the solver vs adjoint: s/step and NFE per family -> outputs/bench/gradients.md
	$(PY) scripts/bench_gradients.py $(ARGS)

bench-latent: install  ## cost of a spiral latent ODE training step at each of Table 2's tolerances (needs make table2's runs) -> outputs/bench/latent_tolerance.md
	$(PY) scripts/bench_latent_tolerance.py $(ARGS)

tensorboard: install  ## TensorBoard over every run under outputs/
	$(VENV)/bin/tensorboard --logdir outputs

clean:  ## remove caches (keeps outputs/ and data/)
	rm -rf .pytest_cache build dist site *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
