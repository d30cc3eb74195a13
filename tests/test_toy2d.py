"""2-D toy data, target energies and their data modules."""

import math

import pytest
import torch

from neuralode.data.energies import POTENTIALS, EnergyDataModule, box_wall, log_normalizer, target_energy
from neuralode.data.toy2d import TOYS, Toy2DDataModule, sample_toy


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toys_are_seeded_finite_and_in_frame(name):
    x = sample_toy(name, 2001, seed=3)
    assert x.shape == (2001, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert torch.equal(x, sample_toy(name, 2001, seed=3))
    assert not torch.equal(x, sample_toy(name, 2001, seed=4))
    # All toys are drawn in [-4, 4]^2; allow a few noisy points outside.
    assert (x.abs() > 4).any(dim=1).float().mean() < 0.02


def test_circles_have_radii_three_and_one_and_a_half():
    r = sample_toy("two_circles", 4000).norm(dim=1)
    outer, inner = r[r > 2.25], r[r <= 2.25]
    assert abs(len(outer) - 2000) < 50
    assert abs(outer.mean() - 3.0) < 0.05 and abs(inner.mean() - 1.5) < 0.05


def test_eight_gaussians_sit_on_eight_angles():
    x = sample_toy("8gaussians", 4000)
    angle = torch.atan2(x[:, 1], x[:, 0])
    offset = torch.remainder(angle + math.pi / 8, math.pi / 4) - math.pi / 8  # distance to nearest centre
    assert offset.abs().median() < 0.1
    assert abs(x.norm(dim=1).median() - 4 / 1.414) < 0.1


def test_checkerboard_fills_only_one_colour():
    x = sample_toy("checkerboard", 4000)
    cell = torch.floor(x / 2).long()
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    assert len(torch.unique(cell, dim=0)) == 8


def test_rings_have_four_radii():
    r = sample_toy("rings", 4000).norm(dim=1)
    for radius in [0.75, 1.5, 2.25, 3.0]:
        near = ((r - radius).abs() < 0.3).float().mean()
        assert 0.2 < near < 0.3


def test_unknown_toy_is_named():
    with pytest.raises(ValueError, match="2-D toy"):
        sample_toy("spiral", 10)
    with pytest.raises(ValueError, match="data.name"):
        Toy2DDataModule(name="mnist")


def test_toy_data_module_batches():
    dm = Toy2DDataModule(name="pinwheel", n_train=100, n_eval=50, batch_size=32, seed=1)
    batch = next(iter(dm.train_dataloader(torch.Generator().manual_seed(0))))
    assert batch.shape == (32, 2)
    evaluation = torch.cat(list(dm.eval_dataloader()))
    assert evaluation.shape == (50, 2)
    assert not torch.equal(evaluation, dm.train_dataset().points[:50])


def test_potentials_match_rezende_formulas_at_known_points():
    origin = torch.zeros(1, 2, dtype=torch.float64)
    # U1(0) = 0.5 (2 / 0.4)^2 - log(2 exp(-0.5 (2 / 0.6)^2)).
    expected_u1 = 0.5 * 25 - math.log(2) + 0.5 * (2 / 0.6) ** 2
    assert math.isclose(POTENTIALS["u1"](origin).item(), expected_u1, rel_tol=1e-12)
    on_band = torch.tensor([[1.0, 1.0]], dtype=torch.float64)  # z2 = sin(pi / 2) = w1(z)
    assert POTENTIALS["u2"](on_band).item() == 0.0
    mirrored = torch.randn(10, 2, dtype=torch.float64)
    assert torch.allclose(POTENTIALS["u1"](mirrored), POTENTIALS["u1"](-mirrored))


def test_wall_is_zero_inside_the_box():
    inside = 7.9 * torch.rand(100, 2) - 3.95
    assert (box_wall(inside) == 0).all()
    assert box_wall(torch.tensor([[5.0, 0.0]])).item() == pytest.approx(0.5 * (1 / 0.2) ** 2)


def test_log_normalizer_of_a_gaussian():
    assert log_normalizer(lambda z: 0.5 * (z**2).sum(-1)) == pytest.approx(math.log(2 * math.pi), abs=1e-7)


@pytest.mark.parametrize("name", sorted(POTENTIALS))
def test_energies_are_normalisable(name):
    U = target_energy(name)
    # The wall makes the mass converge: the same log Z from two boxes and resolutions.
    assert log_normalizer(U) == pytest.approx(log_normalizer(U, half_width=8.0, n=1201), abs=1e-4)
    with pytest.raises(ValueError, match="2-D"):
        U(torch.zeros(3, 3))


def test_unknown_energy_is_named():
    with pytest.raises(ValueError, match="unknown energy"):
        target_energy("u5")
    with pytest.raises(ValueError, match="unknown energy"):
        EnergyDataModule(energy="banana")


def test_energy_data_module_gives_fresh_training_noise_and_fixed_evaluation_noise():
    dm = EnergyDataModule(energy="u3", batch_size=16, steps_per_epoch=3, eval_samples=40, seed=2)
    train = list(dm.train_dataloader(torch.Generator().manual_seed(0)))
    assert len(train) == 3 and train[0].shape == (16, 2)
    again = list(dm.train_dataloader(torch.Generator().manual_seed(0)))
    assert not torch.equal(train[0], again[0])
    first, second = torch.cat(list(dm.eval_dataloader())), torch.cat(list(dm.eval_dataloader()))
    assert first.shape == (40, 2) and torch.equal(first, second)
