"""Table 2's metrics on hand-made spirals whose RMSE is known, and the recipe of Section 5.1."""

from __future__ import annotations

import math

import pytest
import torch

from neuralode.tasks.latent import (SpiralTask, example_horizon, masked_rmse, noisy_targets, spiral_scores)
from neuralode.train.config import compose
from neuralode.train.run import build_task_and_data


def build_task(cfg):
    return build_task_and_data(cfg.model, cfg.data)[0]


class OffsetTask(SpiralTask):
    """Predicts the truth shifted by ``offset`` in x; at t = 0 it is off by ``first`` instead (an
    empty-state prediction), and each posterior draw adds ``spread`` times a +-1 coin in y."""

    def __init__(self, offset: float, first: float = 0.0, spread: float = 0.0):
        super().__init__(torch.nn.Identity())
        self.offset, self.first, self.spread = offset, first, spread
        self.stochastic = spread > 0
        self.batch = None

    def predict(self, batch, sample=False):
        shift = torch.tensor([self.offset, 0.0])
        interp, extrap = batch["interp_values"] + shift, batch["extrap_values"] + shift
        interp[:, 0, 0] += self.first - self.offset
        if sample:
            coin = torch.randint(0, 2, (len(interp), 1, 1)).float() * 2 - 1
            interp, extrap = interp + self.spread * coin * torch.tensor([0.0, 1.0]), extrap + self.spread * coin * torch.tensor([0.0, 1.0])
        return interp, extrap


def toy_batch(n_series: int = 3, points: int = 10, extrap: int = 80) -> dict:
    grid = torch.arange(points + extrap, dtype=torch.float32) * 0.03
    values = torch.stack([torch.cos(grid), torch.sin(grid)], -1).expand(n_series, -1, -1).clone()
    times = grid[:points].expand(n_series, -1).clone()
    return {"times": times, "values": values[:, :points], "mask": torch.ones(n_series, points, dtype=torch.bool),
            "interp_times": times, "interp_values": values[:, :points],
            "extrap_times": grid[points:].expand(n_series, -1).clone(), "extrap_values": values[:, points:]}


def test_both_readings_give_the_known_rmse_and_skip_the_empty_state_point():
    batch = toy_batch()
    scores = spiral_scores(OffsetTask(0.3, first=5.0), batch, noise_std=0.1, dt=0.03)
    # x off by 0.3, y exact: RMSE over both coordinates = 0.3 / sqrt(2), on every reading.
    for reading in ("extrap", "extrap_example", "window"):
        assert torch.allclose(scores[f"{reading}/clean/mean"], torch.full((3,), 0.3 / math.sqrt(2)))
    assert "extrap/clean/sample" not in scores  # no posterior: no samples
    # The t = 0 point (5.0 off) is where the series' first observation is: the window skips it.
    first_observed_later = dict(batch, times=batch["times"] + 0.03)
    later = spiral_scores(OffsetTask(0.3, first=5.0), first_observed_later, 0.1, 0.03)
    assert torch.allclose(later["window/clean/mean"], scores["window/clean/mean"])  # t = 0 and t = 0.03 both skipped
    assert masked_rmse(torch.ones(1, 4, 2), torch.zeros(1, 4, 2), torch.tensor([[False, True, True, False]])).item() == 1.0


def test_the_example_horizon_is_62_points_at_dt_0_03_and_cuts_the_extrapolation():
    assert example_horizon(0.03) == 62 and example_horizon(6 * math.pi / 999) == 99
    batch = toy_batch()
    task = OffsetTask(0.0)
    task.predict = lambda b, sample=False: (b["interp_values"], torch.cat(
        [b["extrap_values"][:, :62], b["extrap_values"][:, 62:] + 1.0], 1))
    scores = spiral_scores(task, batch, 0.1, 0.03)
    assert scores["extrap_example/clean/mean"].abs().max() == 0  # the error lies past the horizon
    assert torch.allclose(scores["extrap/clean/mean"], torch.full((3,), math.sqrt(18 / 80)))


def test_posterior_samples_average_the_rmse_of_each_draw():
    scores = spiral_scores(OffsetTask(0.0, spread=0.4), toy_batch(), 0.1, 0.03, samples=4)
    # each draw is 0.4 off in y on every point: RMSE 0.4 / sqrt(2) whichever way the coin falls
    assert torch.allclose(scores["extrap/clean/sample"], torch.full((3,), 0.4 / math.sqrt(2)))
    assert scores["extrap/clean/mean"].abs().max() == 0


def test_noisy_targets_are_reproducible_from_their_seed_and_have_the_data_std():
    values = torch.zeros(200, 100, 2)
    a, b, c = noisy_targets(values, 0.1, 7), noisy_targets(values, 0.1, 7), noisy_targets(values, 0.1, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.std().item() == pytest.approx(0.1, rel=0.02)
    first = spiral_scores(OffsetTask(0.3), toy_batch(), 0.1, 0.03, seed=3)
    again = spiral_scores(OffsetTask(0.3), toy_batch(), 0.1, 0.03, seed=3)
    assert torch.equal(first["window/noisy/mean"], again["window/noisy/mean"])
    assert not torch.equal(first["window/noisy/mean"], first["window/clean/mean"])


def test_the_section_5_1_recipe_builds_vanilla_cells_and_one_layer_dynamics():
    latent = build_task(compose("train", ["experiment=latent_ode_spiral"])).net
    assert isinstance(latent.encoder.cell, torch.nn.RNNCell) and latent.encoder.cell.hidden_size == 25
    linears = [m for m in latent.dynamics.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 20), (20, 4)]  # one hidden layer of 20
    assert latent.solver.rtol == 1e-5 and latent.solver.atol == 1e-5
    with_gap = build_task(compose("train", ["experiment=rnn_spiral"])).net
    no_gap = build_task(compose("train", ["experiment=rnn_spiral_nogap"])).net
    assert isinstance(with_gap.cell, torch.nn.RNNCell) and with_gap.cell.hidden_size == 25
    assert (with_gap.cell.input_size, no_gap.cell.input_size) == (3, 2)  # the time gap is the third input
    gru = build_task(compose("train", ["experiment=latent_ode_spiral", "model.net.cell=gru"])).net
    assert isinstance(gru.encoder.cell, torch.nn.GRUCell)  # the labelled variant
