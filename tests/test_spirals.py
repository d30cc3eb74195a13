"""The spiral and event generators and their irregular-series batch format."""

import math

import pytest
import torch

from neuralode.data.events import EventsDataModule, make_events
from neuralode.data.spirals import CURVE_LENGTH, SpiralDataModule, make_spirals, spiral_points

SMALL = dict(n_spirals=40, n_points=20, n_extrap=10, dt=0.1)


@pytest.mark.parametrize("n_obs", [5, 12, 20])
def test_shapes_and_window_layout(n_obs):
    d = make_spirals(n_obs=n_obs, **SMALL)
    assert d["times"].shape == (40, n_obs) and d["values"].shape == (40, n_obs, 2)
    assert d["mask"].shape == (40, n_obs) and d["mask"].all()
    assert d["interp_values"].shape == (40, 20, 2) and d["extrap_values"].shape == (40, 10, 2)
    assert d["times"].dtype == torch.float32
    grid = torch.arange(30) * 0.1
    torch.testing.assert_close(d["interp_times"][0], grid[:20])
    torch.testing.assert_close(d["extrap_times"][0], grid[20:])


def test_paper_sizes():
    d = make_spirals(n_obs=30)
    assert d["values"].shape == (1000, 30, 2)
    assert d["interp_times"].shape == (1000, 100) and d["extrap_times"].shape == (1000, 100)


def test_observations_are_sampled_without_replacement_and_sorted():
    d = make_spirals(n_obs=15, noise_std=0.0, **SMALL)
    times = d["times"]
    assert (times[:, 1:] > times[:, :-1]).all(), "observed times must be distinct and sorted"
    idx = torch.round(times / 0.1).long()
    assert idx.min() >= 0 and idx.max() < 20, "observations must lie in the observed window"
    # Without noise, each observed value is the true spiral at its time.
    truth = torch.gather(d["interp_values"], 1, idx[..., None].expand(-1, -1, 2))
    torch.testing.assert_close(d["values"], truth)
    # Irregular: the series do not all share the same observed times.
    assert len({tuple(row.tolist()) for row in idx}) > 1


def test_seed_determines_everything():
    a, b = make_spirals(n_obs=10, seed=3, **SMALL), make_spirals(n_obs=10, seed=3, **SMALL)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    c = make_spirals(n_obs=10, seed=4, **SMALL)
    assert not torch.equal(a["times"], c["times"]) and not torch.equal(a["values"], c["values"])


def test_curve_start_places_each_window_on_its_curve():
    d = make_spirals(n_obs=20, noise_std=0.0, **SMALL)
    grid = torch.arange(30, dtype=torch.float64) * 0.1
    clean = spiral_points(d["curve_start"].double(), grid, d["direction"] < 0).float()
    torch.testing.assert_close(clean[:, :20], d["interp_values"])
    torch.testing.assert_close(clean[:, 20:], d["extrap_values"])
    # The window and its extrapolated points always fit on the curve, so the curve's last
    # n_extrap points lie past every observed window.
    assert d["curve_start"].min() >= 0 and (d["curve_start"] + 29 * 0.1).max() <= CURVE_LENGTH
    assert (d["curve_start"] + 19 * 0.1).max() <= CURVE_LENGTH - 10 * 0.1


def test_windows_that_need_no_extrapolation_cover_the_whole_curve():
    # 400 spirals: the first 300 only need their window to fit, the last 100 their extrapolation too.
    d = make_spirals(n_spirals=400, n_obs=20, noise_std=0.0, n_extrapolated=100, n_points=20, n_extrap=10, dt=0.1)
    end = d["curve_start"] + 19 * 0.1
    assert (end[300:] <= CURVE_LENGTH - 10 * 0.1 + 1e-5).all(), "extrapolated spirals keep their targets on the curve"
    assert not d["extrap_values"][300:].isnan().any()
    assert end[:300].max() > CURVE_LENGTH - 0.5 and (end[:300] <= CURVE_LENGTH + 1e-5).all()
    # Targets past the curve's end are NaN, those before it the curve itself.
    grid = torch.arange(30, dtype=torch.float64) * 0.1
    z = d["curve_start"].double()[:, None] + grid[20:]
    past = z > CURVE_LENGTH + 1e-6
    assert past[:300].any() and not past[300:].any()
    assert torch.equal(d["extrap_values"].isnan().any(-1), past)
    clean = spiral_points(d["curve_start"].double(), grid, d["direction"] < 0).float()
    torch.testing.assert_close(clean[:, 20:][~past], d["extrap_values"][~past])
    assert not d["interp_values"].isnan().any() and not d["values"].isnan().any()


def test_whole_curve_training_leaves_the_test_spirals_as_they_were():
    args = dict(n_obs=7, n_eval=10, **SMALL)
    whole, authors = SpiralDataModule(**args), SpiralDataModule(train_on_whole_curve=False, **args)
    for name, t in authors.eval_dataset().tensors.items():
        assert torch.equal(whole.eval_dataset().tensors[name], t), name
    assert not torch.equal(whole.train_dataset().tensors["curve_start"], authors.train_dataset().tensors["curve_start"])
    assert torch.equal(authors.train_dataset().tensors["values"], make_spirals(n_obs=7, **SMALL)["values"][:30])


def test_half_clockwise_and_direction_label_matches_rotation():
    d = make_spirals(n_obs=20, noise_std=0.0, **SMALL)
    assert (d["direction"] == 1).sum() == 20 and (d["direction"] == -1).sum() == 20
    x = d["interp_values"]
    centre = torch.where(d["direction"][:, None] > 0, torch.tensor([5.0, 0.0]), torch.tensor([-5.0, 0.0]))
    rel, vel = x[:, :-1] - centre[:, None], x[:, 1:] - x[:, :-1]
    turning = torch.sign(rel[..., 0] * vel[..., 1] - rel[..., 1] * vel[..., 0])  # + is counter-clockwise
    assert (turning == d["direction"][:, None]).all()


def test_noise_std_is_the_observation_noise():
    clean = make_spirals(n_spirals=400, n_obs=20, noise_std=0.0, seed=1, n_points=20, n_extrap=10, dt=0.1)
    noisy = make_spirals(n_spirals=400, n_obs=20, noise_std=0.5, seed=1, n_points=20, n_extrap=10, dt=0.1)
    residual = noisy["values"] - noisy["interp_values"]  # n_obs = n_points: every grid point observed
    assert abs(residual.std().item() - 0.5) < 0.02
    assert torch.equal(noisy["extrap_values"], clean["extrap_values"]), "extrapolation targets are noise-free"


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_obs=0), dict(n_obs=21), dict(noise_std=-1.0), dict(dt=1.0), dict(n_spirals=1),
     dict(n_extrapolated=-1), dict(n_extrapolated=41)],
)
def test_bad_arguments_raise(kwargs):
    args = dict(SMALL, n_obs=10) | kwargs
    with pytest.raises(ValueError):
        make_spirals(**args)


def test_data_module_split_and_batches():
    dm = SpiralDataModule(n_obs=7, n_eval=10, batch_size=8, **SMALL)
    train, evaluation = dm.train_dataset(), dm.eval_dataset()
    assert len(train) == 30 and len(evaluation) == 10
    assert not torch.equal(train[0]["values"], evaluation[0]["values"])
    batch = next(iter(dm.train_dataloader(generator=torch.Generator().manual_seed(0))))
    assert batch["values"].shape == (8, 7, 2) and batch["times"].shape == (8, 7)
    assert batch["extrap_values"].shape == (8, 10, 2) and batch["direction"].shape == (8,)
    with pytest.raises(ValueError, match="n_eval"):
        SpiralDataModule(n_eval=40, **SMALL)


def test_events_format_and_rate():
    d = make_events(n_sequences=300, t_end=10.0, base_rate=2.0, seed=0)
    times, mask = d["times"], d["mask"]
    assert d["values"].shape == (*times.shape, 0)
    assert (times[:, 1:] >= times[:, :-1]).all(), "rows (padding included) stay sorted"
    assert (times >= 0).all() and (times <= 10.0).all()
    # Padding is at the end of each row and repeats the last real time.
    n = mask.sum(1)
    assert torch.equal(mask, torch.arange(mask.shape[1])[None] < n[:, None])
    last = times.gather(1, (n - 1).clamp_min(0)[:, None])
    assert torch.equal(torch.where(mask, times, last), times)
    # The expected number of events of a sequence is the integral of its rate.
    expected = torch.trapezoid(d["true_rate"], d["grid_times"], dim=1).mean().item()
    assert abs(n.float().mean().item() - expected) < 4 * math.sqrt(expected / 300)
    assert d["true_rate"].min() >= 0 and d["true_rate"].max() <= 4.0
    assert torch.equal(make_events(n_sequences=20, seed=5)["times"], make_events(n_sequences=20, seed=5)["times"])


def test_events_data_module():
    dm = EventsDataModule(n_sequences=30, n_eval=10, batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["times"].shape[0] == 4 and batch["values"].shape[-1] == 0
    assert batch["t_end"].shape == (4,) and batch["true_rate"].shape == (4, 100)
    assert len(dm.eval_dataset()) == 10
