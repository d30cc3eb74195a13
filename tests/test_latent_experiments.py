"""The latent ODE family through the real configs: two training steps of each experiment
(tiny data, CPU) give the metrics Table 2 and Figures 7-9 read."""

from __future__ import annotations

import json

import pytest

from neuralode.train.config import compose
from neuralode.train.run import train

#: Tiny spirals: 12 series of a 20-point window (6 observed) and 10 extrapolated points.
TINY_SPIRALS = [
    "data.n_spirals=12", "data.n_eval=4", "data.n_points=20", "data.n_extrap=10", "data.dt=0.1", "data.n_obs=6",
    "data.batch_size=4", "data.eval_batch_size=4",
]
TINY_EVENTS = ["data.n_sequences=8", "data.n_eval=4", "data.t_end=3.0", "data.n_grid=10", "data.batch_size=4"]
COMMON = ["device=cpu", "trainer.progress_bar=false", "trainer.max_steps=2", "logger.tensorboard=false"]


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


SPIRAL_METRICS = {"test_elbo", "test_rmse_interp", "test_rmse_extrap", "train_elbo"}


@pytest.mark.parametrize("experiment, extra, metrics, solves", [
    # Backpropagation through the solver by default: see configs/experiment/latent_ode_spiral.yaml.
    ("latent_ode_spiral", [], SPIRAL_METRICS, "backprop"),
    ("latent_ode_spiral", ["solver.gradient=adjoint"], SPIRAL_METRICS, "adjoint"),
    ("rnn_spiral", [], {"test_rmse_interp", "test_rmse_extrap"}, None),
    ("rnn_spiral_residual", [], {"test_rmse_interp", "test_rmse_extrap"}, None),
    ("rnn_spiral_nogap", [], {"test_rmse_interp", "test_rmse_extrap"}, None),
    ("latent_ode_poisson", [], {"test_log_likelihood", "test_rate_rmse", "train_log_likelihood"}, "backprop"),
])
@pytest.mark.slow
def test_each_experiment_trains_two_steps(tmp_path, experiment, extra, metrics, solves):
    data = TINY_EVENTS if experiment.endswith("poisson") else TINY_SPIRALS
    summary = train(compose("train", [f"experiment={experiment}", *data, *COMMON, *extra]), tmp_path)
    assert summary["name"] == experiment and summary["steps"] == 2
    final = records(tmp_path)[-1]
    assert metrics <= set(final)
    assert all(final[key] == final[key] for key in metrics), "a metric is NaN"
    if solves is None:
        assert "nfe_forward" not in final
    else:  # the trainer counted the solves, and the adjoint's backward ones
        assert final["nfe_forward"] > 0 and final["test_nfe_forward"] > 0
        assert (final["nfe_backward"] > 0) == (solves == "adjoint")
    assert (tmp_path / "last.pt").is_file()


def test_spiral_experiments_share_data_and_optimiser_and_take_n_obs():
    latent = compose("train", ["experiment=latent_ode_spiral", "data.n_obs=30"])
    rnn = compose("train", ["experiment=rnn_spiral", "data.n_obs=30"])
    assert latent.data == rnn.data and latent.data.n_obs == 30
    assert latent.optim == rnn.optim and latent.trainer == rnn.trainer
    assert latent.model.net.obs_std == latent.data.noise_std  # the likelihood matches the data's noise
    # The paper's sizes: a 25-unit encoder, 4-D latent, 20-unit dynamics and decoder; a 25-unit RNN.
    assert (latent.model.net.rnn_hidden, latent.model.net.latent_dim) == (25, 4)
    assert (latent.model.net.dynamics_hidden, latent.model.net.decoder_hidden) == (20, 20)
    assert rnn.model.net.hidden == 25 and latent.solver.gradient == "direct"  # backprop through the solver
    residual = compose("train", ["experiment=rnn_spiral_residual", "data.n_obs=30"])
    assert residual.data == rnn.data and residual.optim == rnn.optim and residual.trainer == rnn.trainer
    assert residual.model.net.residual and not rnn.model.net.residual


def test_table2_recipe_matches_the_experiment_configs():
    from neuralode.paper.table2 import EXPERIMENTS, PAPER_EPOCHS

    for experiment in EXPERIMENTS:
        assert compose("train", [f"experiment={experiment}"]).trainer.max_epochs == PAPER_EPOCHS
