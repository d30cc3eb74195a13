"""Scales as configuration: every experiment composes at every scale (configs/recipe/<scale>/),
the smoke and cpu recipes train less than (or exactly as) the paper's, the train command takes
the scale, and each family's gradient default is the one its workload needs."""

from __future__ import annotations

import functools

import pytest
from omegaconf import OmegaConf

from neuralode.paper.common import SCALES, scale_settings
from neuralode.train.config import CONFIG_DIR, compose
from tests.helpers import slow_when

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def composed(experiment: str, scale: str | None = None):
    """The train config of ``experiment`` at ``scale`` (None: no scale given), composed once."""
    return compose("train", [f"experiment={experiment}", *([f"scale={scale}"] if scale else [])])


def train_examples(data) -> int:
    """Training examples of a data config, whatever the data module calls them."""
    if "steps_per_epoch" in data:  # fresh noise
        return data.steps_per_epoch * data.batch_size
    if "n_train" in data:
        return data.n_train
    if "train_limit" in data:  # MNIST
        return 60000 if data.train_limit is None else min(data.train_limit, 60000)
    return (data.get("n_spirals") or data.get("n_sequences")) - data.n_eval


def iterations(cfg) -> int:
    """Optimiser steps a config trains for."""
    per_epoch = -(-train_examples(cfg.data) // cfg.data.batch_size)
    if cfg.trainer.limit_train_batches:
        per_epoch = min(per_epoch, cfg.trainer.limit_train_batches)
    return min(cfg.trainer.max_steps or cfg.trainer.max_epochs * per_epoch, cfg.trainer.max_epochs * per_epoch)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.slow
def test_every_experiment_composes_at_every_scale(experiment, scale):
    cfg = composed(experiment, scale)
    assert cfg.name == experiment and cfg.scale == scale
    if scale != "paper":  # every experiment a paper target trains has its recipe at each scale
        assert (CONFIG_DIR / "recipe" / scale / f"{experiment}.yaml").is_file()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.slow
def test_the_paper_scale_is_the_experiment_as_configured_and_smoke_is_shorter(experiment):
    plain, paper = composed(experiment), composed(experiment, "paper")
    assert plain.scale == "paper"
    assert OmegaConf.to_container(plain) == OmegaConf.to_container(paper)
    smoke, cpu = composed(experiment, "smoke"), composed(experiment, "cpu")
    assert iterations(smoke) < iterations(cpu) <= iterations(paper)
    # A scale changes how long and how much is trained and drawn, never the model.
    assert OmegaConf.to_container(cpu.model) == OmegaConf.to_container(paper.model)


def test_command_line_overrides_win_over_the_scale():
    cfg = compose("train", ["experiment=latent_ode_spiral", "scale=smoke", "trainer.max_epochs=3", "data.n_obs=30"])
    assert cfg.trainer.max_epochs == 3 and cfg.data.n_obs == 30


def test_an_unknown_scale_is_refused_naming_the_scales():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as error:
        compose("train", ["scale=huge"])
    assert "smoke" in str(error.value) and "cpu" in str(error.value)


@pytest.mark.parametrize("scale", SCALES)
def test_every_artefact_has_its_settings_at_every_scale(scale):
    for artefact in ("fig1", "fig3", "fig4", "fig5", "ffjord2d", "memory"):
        assert scale_settings(artefact, scale)


#: The gradient each experiment trains with by default (solver.gradient).
GRADIENT = {
    "mnist_odenet": "adjoint",  # the paper's point: O(1) memory in the solver steps
    "mnist_odenet_dopri5": "adjoint",
    "mnist_rknet": "direct",  # the paper's RK-Net: backprop through the solver
    # Small states with many output times (latent) or a 2-D state (flows): backprop is faster and
    # its memory small (make bench-gradients).
    "latent_ode_spiral": "direct", "latent_ode_poisson": "direct",
    "cnf_density_matching": "direct", "cnf_toy2d": "direct", "ffjord_toy2d": "direct",
}


@pytest.mark.parametrize("experiment, gradient", GRADIENT.items())
# `make test-fast`: the paper scale (the experiment as configured); each composes anew (0.3 s).
@pytest.mark.parametrize("scale", [slow_when(scale != "paper", scale, id=scale) for scale in SCALES])
def test_each_family_defaults_to_its_gradient(experiment, gradient, scale):
    assert composed(experiment, scale).solver.gradient == gradient


@pytest.mark.slow  # composes every experiment
def test_every_ode_experiment_states_its_gradient():
    def solves_an_ode(model) -> bool:
        return "solver" in (model.get("net") or {}) or "solver" in (model.get("flow") or {})

    with_solver = {e for e in EXPERIMENTS if solves_an_ode(composed(e).model)}
    assert with_solver and with_solver <= set(GRADIENT), f"untested gradient default: {sorted(with_solver - set(GRADIENT))}"
