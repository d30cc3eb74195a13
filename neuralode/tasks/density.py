"""Density tasks for 2-D flows (the paper's Figures 4 and 5, FFJORD's toys).

Both tasks take a ``flow``: a :class:`~neuralode.models.cnf.CNF` or a
:class:`~neuralode.models.planar_nf.PlanarFlow`, which share ``log_prob(x)``,
``sample_with_log_prob(z0)`` and ``sample(n)``.

- :class:`MaximumLikelihoodTask`: batches are data points (B, 2); loss = NLL in nats.
- :class:`DensityMatchingTask`: batches are base samples z0 (B, 2) (see
  :class:`~neuralode.data.energies.EnergyDataModule`); loss = KL(q || p) to exp(-U) / Z.
"""

from __future__ import annotations

from typing import Callable

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from neuralode.data.energies import log_normalizer, target_energy
from neuralode.tasks.base import Task


#: Points per flow call when evaluating or drawing a flow: bounds the memory of one solve. A
#: CNF's adaptive solver takes one step size for the whole batch, so a batch of at most this
#: many points gives exactly the result of one call.
CHUNK = 4096


def in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """``fn`` of ``points`` (B, ...) in pieces of at most ``chunk`` rows, concatenated along rows."""
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of points, got {chunk}")
    return torch.cat([fn(part) for part in points.split(chunk)])


def _grid(half_width: float, size: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    axis = torch.linspace(-half_width, half_width, size, dtype=like.dtype, device=like.device)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    return axis, torch.stack([xx, yy], dim=-1).reshape(-1, 2)


@torch.no_grad()
def density_on_grid(flow: nn.Module, half_width: float, size: int, like: torch.Tensor, fraction: float = 1.0,
                    chunk: int = CHUNK) -> torch.Tensor:
    """q on a ``size`` x ``size`` grid over [-half_width, half_width]^2 (rows = y), after
    ``fraction`` of the flow (1 = the model), ``chunk`` points per solve. Under ``no_grad``, not
    ``inference_mode``: a CNF differentiates its field inside the solve to get the trace."""
    _, points = _grid(half_width, size, like)
    log_q = in_chunks(lambda part: flow.log_prob(part, fraction), points, chunk)
    return log_q.exp().reshape(size, size)


@torch.no_grad()
def flow_samples(flow: nn.Module, z0: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """The flow's samples from base points ``z0`` (B, dim), ``chunk`` points per solve."""
    return in_chunks(lambda part: flow.sample_with_log_prob(part)[0], z0, chunk)


def _density_panel(ax, density: torch.Tensor, half_width: float, title: str) -> None:
    ax.imshow(
        density.cpu().numpy(), origin="lower", extent=(-half_width, half_width, -half_width, half_width), cmap="viridis"
    )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def _scatter_panel(ax, points: torch.Tensor, half_width: float, title: str) -> None:
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.5)
    ax.set_xlim(-half_width, half_width)
    ax.set_ylim(-half_width, half_width)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


class _FlowTask(Task):
    def __init__(self, flow: nn.Module, plot_range: float = 4.0, grid_size: int = 100, plot_samples: int = 2000):
        super().__init__()
        self.flow = flow
        self.plot_range, self.grid_size, self.plot_samples = plot_range, grid_size, plot_samples
        self.chunk = CHUNK  # points per flow call in evaluation and figures

    def model_density(self, like: torch.Tensor) -> torch.Tensor:
        """q on the plotting grid, shape (grid_size, grid_size), rows = y."""
        return density_on_grid(self.flow, self.plot_range, self.grid_size, like, chunk=self.chunk)

    def model_samples(self, like: torch.Tensor) -> torch.Tensor:
        z0 = torch.randn(self.plot_samples, like.shape[-1], dtype=like.dtype, device=like.device)
        return flow_samples(self.flow, z0, self.chunk)

    def density_figure(self, batch: torch.Tensor, reference: Callable[[Axes], None]) -> dict[str, Figure]:
        """The task's figure: what the flow should match (``reference`` draws it in the first
        panel), then the model's density and samples."""
        fig = Figure(figsize=(9, 3))
        axes = fig.subplots(1, 3)
        reference(axes[0])
        _density_panel(axes[1], self.model_density(batch), self.plot_range, "model density")
        _scatter_panel(axes[2], self.model_samples(batch), self.plot_range, "model samples")
        fig.tight_layout()
        return {"density": fig}


class MaximumLikelihoodTask(_FlowTask):
    """Fit a flow to samples by maximum likelihood; ``nll`` is -log q(x) in nats per point."""

    monitor = "nll"
    monitor_mode = "min"

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        nll = -self.flow.log_prob(batch).mean()
        return {"loss": nll, "nll": nll.detach()}

    def evaluation_step(self, batch: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            nll = -in_chunks(self.flow.log_prob, batch, self.chunk).mean()
        return {"nll": float(nll), "n": batch.shape[0]}

    def figures(self, batch: torch.Tensor) -> dict[str, Figure]:
        return self.density_figure(batch, lambda ax: _scatter_panel(ax, batch, self.plot_range, "data"))


class DensityMatchingTask(_FlowTask):
    """Fit a flow q to a target p = exp(-U) / Z by minimising KL(q || p).

    KL(q || p) = E_{z0}[log q(x) + U(x)] + log Z with x the flow of z0; log Z is computed once
    by quadrature, so ``kl`` is a true KL divergence (>= 0, 0 when q = p).
    """

    monitor = "kl"
    monitor_mode = "min"

    def __init__(
        self,
        flow: nn.Module,
        energy: str | Callable[[torch.Tensor], torch.Tensor] = "u1",
        plot_range: float = 4.0,
        grid_size: int = 100,
        plot_samples: int = 2000,
    ):
        super().__init__(flow, plot_range, grid_size, plot_samples)
        self.energy = target_energy(energy) if isinstance(energy, str) else energy
        self.log_z = log_normalizer(self.energy)

    def _log_ratio(self, z0: torch.Tensor) -> torch.Tensor:
        """log q(x) + U(x) = log q(x) - log p(x) - log Z for x the flow of each base sample."""
        x, log_q = self.flow.sample_with_log_prob(z0)
        return log_q + self.energy(x)

    def kl(self, z0: torch.Tensor) -> torch.Tensor:
        """Monte Carlo estimate of KL(q || p) from base samples ``z0``."""
        return self._log_ratio(z0).mean() + self.log_z

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        kl = self.kl(batch)
        return {"loss": kl, "kl": kl.detach()}

    def evaluation_step(self, batch: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            kl = in_chunks(self._log_ratio, batch, self.chunk).mean() + self.log_z
        return {"kl": float(kl), "n": batch.shape[0]}

    def figures(self, batch: torch.Tensor) -> dict[str, Figure]:
        _, points = _grid(self.plot_range, self.grid_size, batch)
        target = torch.exp(-self.energy(points) - self.log_z).reshape(self.grid_size, self.grid_size)
        return self.density_figure(batch, lambda ax: _density_panel(ax, target, self.plot_range, "target"))
