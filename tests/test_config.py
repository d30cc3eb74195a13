"""Config composition: experiments, the shared solver group, lr scaling, and clear errors for
bad overrides (before anything is built)."""

from __future__ import annotations

import dataclasses

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from neuralode.ode.settings import SolverSettings
from neuralode.train.config import CONFIG_DIR, ConfigError, check_override_keys, compose, upgrade_stored_config
from neuralode.train.run import train
from tests.blobs import TINY_MNIST, tiny_mnist

EXPERIMENTS = {
    "mnist_odenet": "neuralode.models.odenet.ODENet",
    "mnist_odenet_dopri5": "neuralode.models.odenet.ODENet",
    "mnist_rknet": "neuralode.models.odenet.ODENet",
    "mnist_resnet": "neuralode.models.resnet.ResNet",
    "mnist_mlp": "neuralode.models.mlp.MLP",
}
#: The solver of each: the paper's ODE-Net used implicit Adams (Section 3), the RK-Net a Runge-Kutta
#: integrator; the dopri5 ODE-Net is the torchdiffeq example's variant.
METHODS = {"mnist_odenet": "adams", "mnist_odenet_dopri5": "dopri5", "mnist_rknet": "dopri5"}


def error_chain(error: BaseException) -> str:
    """Hydra puts the detail (key, expected type) in the exception's causes."""
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__
    return "\n".join(parts)


@pytest.mark.parametrize("experiment, net", EXPERIMENTS.items())
def test_every_experiment_composes_to_the_reference_recipe(experiment, net):
    cfg = compose("train", [f"experiment={experiment}"])
    assert cfg.name == experiment
    assert cfg.model._target_ == "neuralode.tasks.classification.ClassificationTask"
    assert cfg.model.net._target_ == net
    assert cfg.data._target_ == "neuralode.data.mnist.MNISTDataModule" and cfg.data.batch_size == 128
    assert cfg.optim.optimizer._target_ == "torch.optim.SGD" and cfg.optim.optimizer.momentum == 0.9
    assert cfg.optim.optimizer.lr == pytest.approx(0.1)
    assert list(cfg.optim.scheduler.milestones) == [60, 100, 140] and cfg.optim.scheduler.gamma == 0.1
    assert cfg.trainer.max_epochs == 160
    assert (cfg.solver.method, cfg.solver.rtol, cfg.solver.atol) == (METHODS.get(experiment, "dopri5"), 1e-3, 1e-3)


def test_rknet_backpropagates_through_the_solver_and_odenet_uses_the_adjoint():
    assert compose("train", ["experiment=mnist_odenet"]).model.net.solver.gradient == "adjoint"
    assert compose("train", ["experiment=mnist_rknet"]).model.net.solver.gradient == "direct"


def test_solver_overrides_reach_the_model():
    cfg = compose("train", ["experiment=mnist_odenet", "solver=rk4", "solver.options.step_size=0.1"])
    assert cfg.model.net.solver.method == "rk4" and cfg.model.net.solver.options.step_size == 0.1
    cfg = compose("train", ["solver=dopri5_seminorm", "solver.rtol=1e-5"])
    assert cfg.model.net.solver.rtol == 1e-5 and cfg.model.net.solver.adjoint_options.norm == "seminorm"


@pytest.mark.parametrize("solver_file", sorted((CONFIG_DIR / "solver").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_solver_file_has_exactly_the_solver_settings_keys(solver_file):
    assert set(OmegaConf.load(solver_file)) == {f.name for f in dataclasses.fields(SolverSettings)}
    cfg = compose("train", [f"solver={solver_file.stem}"])
    assert OmegaConf.get_type(cfg, "solver") is SolverSettings  # the ODE core's type is the group's schema
    assert SolverSettings.from_any(OmegaConf.to_container(cfg.solver)).gradient == "adjoint"


def test_the_solver_group_composes_with_a_gradient_strategy():
    for gradient in ("direct", "adjoint"):
        cfg = compose("train", ["experiment=mnist_odenet", f"solver.gradient={gradient}"])
        assert cfg.solver.gradient == cfg.model.net.solver.gradient == gradient
        net = instantiate(cfg.model.net, _convert_="all", channels=4)
        # the model solves with the group's settings (the paper's adams at 1e-3)
        assert net.ode.solver == SolverSettings(method="adams", gradient=gradient)


def test_learning_rate_scales_linearly_with_the_batch_size():
    assert compose("train", ["data.batch_size=256"]).optim.optimizer.lr == pytest.approx(0.2)
    assert compose("train", ["data.batch_size=32"]).optim.optimizer.lr == pytest.approx(0.025)
    assert compose("train", ["optim.optimizer.lr=0.05"]).optim.optimizer.lr == 0.05


def test_paths_follow_neuralode_root(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURALODE_ROOT", str(tmp_path))
    cfg = compose("train")
    assert cfg.paths.output_dir == f"{tmp_path}/outputs" and cfg.data.root == f"{tmp_path}/data"


def test_unknown_key_wrong_type_and_unknown_experiment_fail_at_composition():
    with pytest.raises(ConfigCompositionException) as error:
        compose("train", ["trainer.max_epoch=1"])
    assert "trainer.max_epoch" in error_chain(error.value)
    with pytest.raises(ConfigCompositionException) as error:
        compose("train", ["solver.rtol=abc"])
    assert "solver.rtol" in error_chain(error.value) and "Float" in error_chain(error.value)
    with pytest.raises(MissingConfigException, match="experiment/nope") as error:
        compose("train", ["experiment=nope"])
    assert "mnist_odenet" in str(error.value)  # it lists the experiments there are


def test_override_check_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as error:
        check_override_keys(["trainer.max_epoch=1"])
    assert "'trainer.max_epoch'" in str(error.value) and "did you mean 'trainer.max_epochs'" in str(error.value)
    assert "max_steps" in str(error.value)  # lists the valid keys under trainer
    with pytest.raises(ConfigError, match="did you mean 'seed'"):
        check_override_keys(["sed=3"])
    with pytest.raises(ConfigError, match="did you mean 'solver.adjoint_rtol'"):
        check_override_keys(["solver.adjoint_rtl=1e-4"])
    # Valid keys, group choices, sweeps, flags and keys under open nodes pass.
    check_override_keys(["experiment=mnist_rknet", "solver=rk4", "seed=0,1", "trainer.max_epochs=1", "-m",
                         "--cfg", "job", "model.net.channels=32", "+data.foo=1", "hydra.run.dir=x", "solver.options.step_size=0.1"])


@pytest.mark.parametrize("overrides, message", [
    (["solver.gradient=foo"], "solver.gradient='foo' is not a gradient strategy; choose one of direct, adjoint, checkpoint"),
    (["solver.gradient=direct", "solver.adjoint_method=rk4"], "solver.adjoint_method applies to gradient='adjoint' only"),
    (["solver.rtol=-1"], "solver.rtol"),
    (["solver.method=dopri6"], "solver.method"),
])
def test_bad_solver_settings_are_one_line_errors_naming_the_key_before_training(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        train(compose("train", [*overrides, *TINY_MNIST, "trainer.max_steps=1"]), tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not any(tmp_path.iterdir())  # nothing was written


def test_the_old_adjoint_key_points_to_gradient():
    with pytest.raises(ConfigError, match=r"'solver\.adjoint=true/false' is now 'solver\.gradient=adjoint/direct'"):
        check_override_keys(["solver.adjoint=false"])
    with pytest.raises(ConfigCompositionException):  # Hydra itself knows no such key either
        compose("train", ["solver.adjoint=false"])


def test_configs_stored_by_old_runs_read_adjoint_as_gradient():
    """Runs stored before ``solver.gradient`` (``adjoint: true/false``) can still be rebuilt."""
    stored = OmegaConf.to_container(compose("train", tiny_mnist("mnist_rknet")), resolve=True)
    for node in (stored["solver"], stored["model"]["net"]["solver"]):
        node["adjoint"] = node.pop("gradient") == "adjoint"  # as an old run stored it
    assert stored["solver"]["adjoint"] is False
    upgraded = upgrade_stored_config(stored)
    assert upgraded["solver"] == upgraded["model"]["net"]["solver"] == SolverSettings(gradient="direct").as_dict()
    assert stored["solver"]["adjoint"] is False  # the input is left as it was
    net = instantiate(OmegaConf.create(upgraded).model.net, _convert_="all")
    assert net.ode.solver.gradient == "direct"
    # .hydra/config.yaml keeps ${solver}: the interpolation follows the upgraded node.
    old = OmegaConf.create({"solver": {"adjoint": True, "rtol": 1e-4}, "model": {"solver": "${solver}"}})
    assert OmegaConf.to_container(upgrade_stored_config(old).model, resolve=True) == {
        "solver": {"gradient": "adjoint", "rtol": 1e-4}}
    # adjoint: false ignored the adjoint's settings; "direct" refuses them, so they go.
    old = {"solver": {"adjoint": False, "adjoint_rtol": 1e-6, "adjoint_options": {"norm": "seminorm"}}}
    assert upgrade_stored_config(old) == {"solver": {"gradient": "direct", "adjoint_rtol": None, "adjoint_options": {}}}


def test_unknown_solver_and_added_keys_are_rejected_before_training(tmp_path):
    with pytest.raises(ConfigError, match="foo"):
        train(compose("train", ["+trainer.foo=1", *TINY_MNIST, "trainer.max_steps=1"]), tmp_path)
    with pytest.raises(ConfigError, match="CUDA is not available|CUDA device\\(s\\) are visible"):
        train(compose("train", [*TINY_MNIST, "device=cuda:99", "trainer.max_steps=1"]), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was written
