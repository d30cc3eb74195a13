"""The flow experiments (Figures 4 and 5, FFJORD toys) composed from configs/ as the command
line composes them, trained for two steps on CPU, and their paper recipes."""

from __future__ import annotations

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from neuralode.train.config import compose
from neuralode.train.loggers import read_metrics
from neuralode.train.run import train


TINY = ["device=cpu", "trainer.max_steps=2", "trainer.progress_bar=false", "model.grid_size=8", "model.plot_samples=16"]
TINY_ENERGY = ["data.batch_size=16", "data.steps_per_epoch=2", "data.eval_samples=16", "data.eval_batch_size=16"]
TINY_TOY = ["data.n_train=32", "data.n_eval=16", "data.batch_size=16", "data.eval_batch_size=16"]

EXPERIMENTS = {
    "cnf_density_matching": ("kl", True, TINY_ENERGY),
    "nf_density_matching": ("kl", False, TINY_ENERGY),
    "cnf_toy2d": ("nll", True, [*TINY_TOY, "data.name=two_circles"]),
    "nf_toy2d": ("nll", False, TINY_TOY),
    "ffjord_toy2d": ("nll", True, [*TINY_TOY, "data.name=pinwheel"]),
}


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
@pytest.mark.slow
def test_two_steps_of_each_experiment(experiment, tmp_path):
    metric, solves_odes, tiny_data = EXPERIMENTS[experiment]
    cfg = compose("train", [f"experiment={experiment}", *TINY, *tiny_data])
    summary = train(cfg, tmp_path)

    assert summary["name"] == experiment and summary["steps"] == 2
    record = read_metrics(tmp_path)[-1]
    assert math.isfinite(record[f"test_{metric}"]) and math.isfinite(record[f"train_{metric}"])
    # CNFs log the solver's work per training step; they backpropagate through the solver by
    # default, so no adjoint solve runs. Planar NFs solve nothing.
    assert (record.get("nfe_forward", 0) > 0) == solves_odes
    assert record.get("nfe_backward", 0) == 0
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert "figures/density" in events.Tags()["images"]  # densities and samples reach TensorBoard
    assert (tmp_path / "last.pt").is_file()


def test_the_size_sweep_keys_set_the_flows_size(tmp_path):
    """K (NF layers) and M (CNF units) of Figure 4 are the keys `make fig4` sweeps."""
    from neuralode.paper.fig4 import FLOWS
    from neuralode.train.run import build_task_and_data

    for experiment, key, _ in FLOWS.values():
        cfg = compose("train", [f"experiment={experiment}", f"{key}=3", *TINY_ENERGY])
        task, _ = build_task_and_data(cfg.model, cfg.data)
        flow = task.flow
        assert (len(flow.layers) if experiment.startswith("nf") else flow.field.units) == 3


def iterations(cfg) -> int:
    if cfg.trainer.max_steps is not None:
        return cfg.trainer.max_steps
    per_epoch = cfg.data.get("steps_per_epoch") or math.ceil(cfg.data.n_train / cfg.data.batch_size)
    return cfg.trainer.max_epochs * per_epoch


@pytest.mark.slow
def test_paper_recipes():
    cnf = compose("train", ["experiment=cnf_density_matching"])
    assert cnf.optim.optimizer._target_ == "torch.optim.Adam" and iterations(cnf) == 10_000
    assert cnf.model.flow.field._target_.endswith("PlanarField") and cnf.model.flow.trace == "exact"
    nf = compose("train", ["experiment=nf_density_matching"])
    assert nf.optim.optimizer._target_ == "torch.optim.RMSprop" and iterations(nf) == 500_000
    assert nf.model.flow.direction == "sample"  # KL(q||p) needs exact samples and their log q
    for toy in ("two_circles", "two_moons"):
        assert compose("train", ["experiment=cnf_toy2d", f"data.name={toy}"]).model.flow.field.units == 64
        assert compose("train", ["experiment=nf_toy2d", f"data.name={toy}"]).model.flow.layers == 64
    ffjord = compose("train", ["experiment=ffjord_toy2d"])
    assert ffjord.model.flow.trace == "hutchinson" and ffjord.solver.method == "dopri5"
    assert ffjord.solver.rtol == ffjord.solver.atol == 1e-5
    assert ffjord.data.batch_size == 100 and iterations(ffjord) == 10_000
