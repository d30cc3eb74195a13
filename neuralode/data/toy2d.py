"""2-D toy densities for maximum likelihood: FFJORD's eight toys and the Neural ODE paper's
Two Circles / Two Moons (Figure 5), generated with a seeded torch generator.

The shapes and scales follow FFJORD's toy generators (sklearn-free rewrites). Points on the
circles and moons are at uniformly random angles (sklearn spaces them evenly before adding
noise; for a density the difference is immaterial). Every toy lies roughly within [-4, 4]^2.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.utils.data import Dataset

from neuralode.data.base import DataModule

Sampler = Callable[[int, torch.Generator], torch.Tensor]


def _uniform(n: int, g: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def _normal(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _shuffle(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x[torch.randperm(len(x), generator=g)]


def _polar(radius: float | torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)


def circles(n: int, g: torch.Generator) -> torch.Tensor:
    """Two concentric circles, radii 3 and 1.5, noise std 0.24."""
    n_outer = n // 2
    outer = _polar(1.0, _uniform(n_outer, g, 0, 2 * math.pi))
    inner = _polar(0.5, _uniform(n - n_outer, g, 0, 2 * math.pi))
    x = torch.cat([outer, inner]) + 0.08 * _normal((n, 2), g)
    return _shuffle(3 * x, g)


def moons(n: int, g: torch.Generator) -> torch.Tensor:
    """Two interleaved half circles, noise 0.1, scaled by 2 and centred."""
    n_upper = n // 2
    a = _uniform(n_upper, g, 0, math.pi)
    b = _uniform(n - n_upper, g, 0, math.pi)
    upper = torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    lower = torch.stack([1 - torch.cos(b), 0.5 - torch.sin(b)], dim=1)
    x = torch.cat([upper, lower]) + 0.1 * _normal((n, 2), g)
    return _shuffle(2 * x + torch.tensor([-1.0, -0.2], dtype=x.dtype), g)


def rings(n: int, g: torch.Generator) -> torch.Tensor:
    """Four concentric rings, radii 3, 2.25, 1.5, 0.75, noise std 0.08."""
    counts = [n // 4] * 3 + [n - 3 * (n // 4)]
    radii = [1.0, 0.75, 0.5, 0.25]
    x = torch.cat([_polar(r, _uniform(k, g, 0, 2 * math.pi)) for r, k in zip(radii, counts)]) * 3
    return _shuffle(x + 0.08 * _normal((n, 2), g), g)


def swissroll(n: int, g: torch.Generator) -> torch.Tensor:
    """The swiss roll's (x, z) plane: t (cos t, sin t), t in [1.5 pi, 4.5 pi], noise 1, scaled by 1/5."""
    t = 1.5 * math.pi * (1 + 2 * _uniform(n, g))
    x = _polar(t, t) + _normal((n, 2), g)
    return x / 5


def eight_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    """Eight Gaussians (std 0.35) on a circle of radius 2.83."""
    centre = torch.randint(0, 8, (n,), generator=g).to(torch.float64) * (math.pi / 4)
    x = _polar(4.0, centre) + 0.5 * _normal((n, 2), g)
    return x / 1.414


def pinwheel(n: int, g: torch.Generator) -> torch.Tensor:
    """Five arms, each a Gaussian bent by a rotation that grows with the radius."""
    arms, rate = 5, 0.25
    arm = torch.randint(0, arms, (n,), generator=g)
    features = _normal((n, 2), g) * torch.tensor([0.3, 0.1], dtype=torch.float64)
    features[:, 0] += 1
    angle = arm * (2 * math.pi / arms) + rate * torch.exp(features[:, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotated = torch.stack([features[:, 0] * cos + features[:, 1] * sin, -features[:, 0] * sin + features[:, 1] * cos], 1)
    return 2 * rotated


def two_spirals(n: int, g: torch.Generator) -> torch.Tensor:
    """Two interleaved spirals of 1.5 turns."""
    half = n // 2
    r = torch.sqrt(_uniform(n - half, g)) * 3 * math.pi
    arm = torch.stack([-torch.cos(r) * r, torch.sin(r) * r], dim=1) + 0.5 * _uniform(2 * (n - half), g).reshape(-1, 2)
    x = torch.cat([arm, -arm[:half]]) / 3
    return _shuffle(x + 0.1 * _normal((n, 2), g), g)


def checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    """Uniform on 8 of the 16 squares of a 4 x 4 checkerboard spanning [-4, 4]^2."""
    x1 = _uniform(n, g, -2, 2)
    x2 = _uniform(n, g) - 2 * torch.randint(0, 2, (n,), generator=g) + torch.floor(x1) % 2
    return 2 * torch.stack([x1, x2], dim=1)


TOYS: dict[str, Sampler] = {
    "8gaussians": eight_gaussians,
    "pinwheel": pinwheel,
    "checkerboard": checkerboard,
    "swissroll": swissroll,
    "moons": moons,
    "circles": circles,
    "2spirals": two_spirals,
    "rings": rings,
    # The Neural ODE paper's names for Figure 5.
    "two_circles": circles,
    "two_moons": moons,
}


def sample_toy(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` float32 points of shape (n, 2) from the toy ``name``, reproducible from ``seed``."""
    if name not in TOYS:
        raise ValueError(f"unknown 2-D toy {name!r}; choose one of {sorted(TOYS)}")
    if n < 1:
        raise ValueError(f"number of samples must be positive, got {n}")
    return TOYS[name](n, torch.Generator().manual_seed(seed)).to(torch.float32)


class PointDataset(Dataset):
    """A fixed set of points; items are (2,) tensors, batches (B, 2)."""

    def __init__(self, points: torch.Tensor):
        self.points = points

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.points[index]


class Toy2DDataModule(DataModule):
    """Samples of one 2-D toy for maximum likelihood: seeded train and evaluation sets.

    The two sets come from different seeds (``seed`` and ``seed + 1``), so evaluation NLL is
    measured on points the model never saw.
    """

    def __init__(
        self,
        name: str = "two_moons",
        n_train: int = 20000,
        n_eval: int = 5000,
        batch_size: int = 512,
        eval_batch_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, num_workers)
        if name not in TOYS:
            raise ValueError(f"data.name={name!r} is not a 2-D toy; choose one of {sorted(TOYS)}")
        self.name, self.n_train, self.n_eval, self.seed = name, n_train, n_eval, seed

    def train_dataset(self) -> Dataset:
        return PointDataset(sample_toy(self.name, self.n_train, self.seed))

    def eval_dataset(self) -> Dataset:
        return PointDataset(sample_toy(self.name, self.n_eval, self.seed + 1))
