"""The 2-D target energies of Rezende & Mohamed (2015, Table 1) and a data module for
density matching against them.

The density is p(z) = exp(-U(z)) / Z. The Neural ODE paper (Figure 4) fits three of these
by minimising KL(q || p); it does not name which three. We use U1 (ring with two modes),
U2 (sine band) and U3 (split sine band); U4 is available too.

U2-U4 do not depend on z1 except through a periodic term, so exp(-U) is not integrable:
KL(q || p) would have no minimum (q could spread forever along z1). We add a steep wall
outside the square [-4, 4]^2 that the paper plots (zero inside it), which makes every target
a proper density while leaving the pictured target unchanged; ``log_normalizer`` then gives
log Z by quadrature so that the reported KL is a true KL (>= 0).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.utils.data import Dataset

from neuralode.data.base import DataModule

#: Half-width of the square the targets are drawn in; the wall starts at its edge.
BOX = 4.0
#: Width of the wall outside the box (a Gaussian-like fall-off, in the same units as z).
WALL_WIDTH = 0.2


def _w1(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * z[..., 0] / 4)


def _w2(z: torch.Tensor) -> torch.Tensor:
    return 3 * torch.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)


def _w3(z: torch.Tensor) -> torch.Tensor:
    return 3 * torch.sigmoid((z[..., 0] - 1) / 0.3)


def _neg_logsumexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """-log(exp(a) + exp(b)), computed stably."""
    return -torch.logaddexp(a, b)


def u1(z: torch.Tensor) -> torch.Tensor:
    """Ring of radius 2 with two modes at z1 = +-2."""
    ring = 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    left = -0.5 * ((z[..., 0] - 2) / 0.6) ** 2
    right = -0.5 * ((z[..., 0] + 2) / 0.6) ** 2
    return ring + _neg_logsumexp(left, right)


def u2(z: torch.Tensor) -> torch.Tensor:
    """Sine band."""
    return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2


def u3(z: torch.Tensor) -> torch.Tensor:
    """Sine band split in two by a bump."""
    a = -0.5 * ((z[..., 1] - _w1(z)) / 0.35) ** 2
    b = -0.5 * ((z[..., 1] - _w1(z) + _w2(z)) / 0.35) ** 2
    return _neg_logsumexp(a, b)


def u4(z: torch.Tensor) -> torch.Tensor:
    """Sine band split in two by a step."""
    a = -0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2
    b = -0.5 * ((z[..., 1] - _w1(z) + _w3(z)) / 0.35) ** 2
    return _neg_logsumexp(a, b)


POTENTIALS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"u1": u1, "u2": u2, "u3": u3, "u4": u4}


def box_wall(z: torch.Tensor) -> torch.Tensor:
    """Zero inside [-BOX, BOX]^2, a quadratic wall outside it."""
    outside = torch.relu(z.abs() - BOX) / WALL_WIDTH
    return 0.5 * (outside**2).sum(dim=-1)


def target_energy(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The target energy U(z) (potential plus the box wall) for ``u1`` ... ``u4``.

    Takes points of shape (..., 2) and returns shape (...).
    """
    key = name.lower()
    if key not in POTENTIALS:
        raise ValueError(f"unknown energy {name!r}; choose one of {sorted(POTENTIALS)}")
    potential = POTENTIALS[key]

    def U(z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != 2:
            raise ValueError(f"the target energies are 2-D; got points of shape {tuple(z.shape)}")
        return potential(z) + box_wall(z)

    U.__name__ = key
    return U


def log_normalizer(U: Callable[[torch.Tensor], torch.Tensor], half_width: float = BOX + 2.0, n: int = 801) -> float:
    """log Z = log of the integral of exp(-U) by the midpoint rule on a square grid (float64).

    The wall makes exp(-U) negligible beyond ``BOX + 1``, so the default square covers it.
    """
    h = 2 * half_width / n
    axis = -half_width + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)
    return float(torch.logsumexp(-U(grid), dim=0) + 2 * math.log(h))


class FreshNoise(Dataset):
    """``length`` standard normal vectors, drawn anew at every access (global torch RNG)."""

    def __init__(self, length: int, dim: int):
        self.length, self.dim = length, dim

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.randn(self.dim)

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        # The DataLoader asks for a whole batch at once: one randn call instead of one per
        # sample, which cost planar flows (a few microseconds of compute a step) most of their time.
        return list(torch.randn(len(indices), self.dim).unbind(0))


class FixedNoise(Dataset):
    """``length`` standard normal vectors drawn once from ``seed``: the same every evaluation."""

    def __init__(self, length: int, dim: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.samples = torch.randn(length, dim, generator=generator)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.samples[index]


class EnergyDataModule(DataModule):
    """Density matching has no data: a "batch" is a batch of base samples z0 ~ N(0, I).

    The task pushes them through the flow and scores them against the target ``energy``
    (the task reads the energy's name from this module's config, ``${data.energy}``).
    One training epoch is ``steps_per_epoch`` batches of fresh noise; evaluation uses
    ``eval_samples`` fixed noise vectors so that the KL estimate is comparable across epochs.
    """

    def __init__(
        self,
        energy: str = "u1",
        batch_size: int = 256,
        steps_per_epoch: int = 100,
        eval_samples: int = 4096,
        eval_batch_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, num_workers)
        target_energy(energy)  # fail early on a bad name
        if steps_per_epoch < 1 or eval_samples < 1:
            raise ValueError(
                f"data.steps_per_epoch and data.eval_samples must be positive, got {steps_per_epoch}, {eval_samples}"
            )
        self.energy = energy
        self.steps_per_epoch = steps_per_epoch
        self.eval_samples = eval_samples
        self.seed = seed

    def train_dataset(self) -> Dataset:
        return FreshNoise(self.steps_per_epoch * self.batch_size, dim=2)

    def eval_dataset(self) -> Dataset:
        return FixedNoise(self.eval_samples, dim=2, seed=self.seed)
