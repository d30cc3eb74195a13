"""Planar normalizing flow (Rezende & Mohamed 2015), the discrete baseline of the paper's
Figures 4 and 5.

One layer maps y = z + u_hat tanh(w^T z + b), with log |det dy/dz| = log |1 + u_hat^T psi(z)|,
psi(z) = (1 - tanh^2(w^T z + b)) w. The constraint u_hat = u + (m(w^T u) - w^T u) w / |w|^2
with m(x) = -1 + softplus(x) keeps w^T u_hat > -1, which makes the layer invertible.

A planar layer has no closed-form inverse, so one direction is exact and differentiable and
the other goes through a 1-D root find (:meth:`PlanarLayer.inverse`, for sampling and
figures, not for training):

- ``direction="sample"`` (density matching, KL(q || p)): layers map base -> data.
- ``direction="density"`` (maximum likelihood on samples): layers map data -> base.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neuralode.models.cnf import standard_normal_log_prob

DIRECTIONS = ("sample", "density")


class PlanarLayer(nn.Module):
    """One planar transformation y = z + u_hat tanh(w^T z + b)."""

    def __init__(self, dim: int = 2, init_scale: float = 0.1):
        super().__init__()
        self.u = nn.Parameter(init_scale * torch.randn(dim))
        self.w = nn.Parameter(init_scale * torch.randn(dim))
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> torch.Tensor:
        """u projected so that w^T u_hat = -1 + softplus(w^T u) > -1 (invertibility)."""
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / (self.w @ self.w).clamp_min(1e-12)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y and log |det dy/dz| (shape (B,)) for z of shape (B, dim)."""
        u = self.u_hat()
        h = torch.tanh(z @ self.w + self.b)
        y = z + h[:, None] * u
        log_det = torch.log((1 + (1 - h**2) * (self.w @ u)).abs() + 1e-12)
        return y, log_det

    @torch.no_grad()
    def inverse(self, y: torch.Tensor, max_iterations: int = 100) -> torch.Tensor:
        """z with forward(z) = y, by a safeguarded Newton solve for the scalar a = w^T z + b.

        Along w the layer reads c = a + (w^T u_hat) tanh(a) with c = w^T y + b; the right side
        is increasing in a and |a - c| <= |w^T u_hat|, which brackets the root. A Newton step
        is taken only when it stays inside the bracket and is at most half the previous step;
        otherwise the bracket is bisected. (Plain Newton can jump back and forth between the
        flat ends of a steep tanh step for many iterations.)
        """
        u = self.u_hat()
        wu = self.w @ u
        c = y @ self.w + self.b
        low, high = c - wu.abs() - 1e-6, c + wu.abs() + 1e-6
        a = c.clone()
        previous_step = high - low
        tolerance = 8 * torch.finfo(y.dtype).eps * (1 + c.abs() + wu.abs())  # rounding of the residual
        for _ in range(max_iterations):
            h = torch.tanh(a)
            residual = a + wu * h - c
            if bool((residual.abs() <= tolerance).all()):
                break
            high = torch.where(residual > 0, a, high)
            low = torch.where(residual > 0, low, a)
            newton_step = residual / (1 + wu * (1 - h**2))
            newton = a - newton_step
            use_newton = (newton >= low) & (newton <= high) & (2 * newton_step.abs() <= previous_step.abs())
            step = torch.where(use_newton, newton_step, a - (low + high) / 2)
            a, previous_step = a - step, step
        return y - torch.tanh(a)[:, None] * u


class PlanarFlow(nn.Module):
    """K stacked planar layers with a N(0, I) base; see the module docstring for ``direction``."""

    def __init__(self, dim: int = 2, layers: int = 8, direction: str = "sample", init_scale: float = 0.1):
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"model direction={direction!r} is unknown; choose one of {DIRECTIONS}")
        if layers < 1:
            raise ValueError(f"a planar flow needs at least one layer, got layers={layers}")
        self.dim, self.direction = dim, direction
        self.layers = nn.ModuleList(PlanarLayer(dim, init_scale) for _ in range(layers))

    def _generative_steps(self, fraction: float) -> int:
        return round(min(max(fraction, 0.0), 1.0) * len(self.layers))

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (batch, {self.dim}), got {tuple(x.shape)}")

    def sample_with_log_prob(self, z0: torch.Tensor, fraction: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Points after ``fraction`` of the layers (base -> data) and their log q, shape (B,).

        Differentiable for ``direction="sample"``; for ``"density"`` the points come from the
        numerical inverse and their log q is evaluated at them.
        """
        self._check(z0)
        k = self._generative_steps(fraction)
        if self.direction == "density":
            x = z0
            for layer in reversed(self.layers[len(self.layers) - k :]):
                x = layer.inverse(x)
            return x, self.log_prob(x, fraction)
        x, log_q = z0, standard_normal_log_prob(z0)
        for layer in self.layers[:k]:
            x, log_det = layer(x)
            log_q = log_q - log_det
        return x, log_q

    def log_prob(self, x: torch.Tensor, fraction: float = 1.0) -> torch.Tensor:
        """log q(x) of the distribution after ``fraction`` of the layers, shape (B,).

        Differentiable for ``direction="density"``; for ``"sample"`` x is mapped back by the
        numerical inverse (use it for evaluation and figures, not as a training loss).
        """
        self._check(x)
        k = self._generative_steps(fraction)
        if self.direction == "density":
            # The data side of the first k generative steps is the last k normalizing layers.
            z, log_p = x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            for layer in self.layers[len(self.layers) - k :]:
                z, log_det = layer(z)
                log_p = log_p + log_det
            return standard_normal_log_prob(z) + log_p
        z0 = x
        for layer in reversed(self.layers[:k]):
            z0 = layer.inverse(z0)
        return self.sample_with_log_prob(z0, fraction)[1]

    def sample(self, n: int) -> torch.Tensor:
        """``n`` samples from the model."""
        return self.sample_with_log_prob(torch.randn(n, self.dim, device=self.layers[0].u.device))[0]

    def sample_path(self, z0: torch.Tensor, fractions: Sequence[float]) -> list[torch.Tensor]:
        """Positions of base samples ``z0`` after each of ``fractions`` of the layers."""
        return [self.sample_with_log_prob(z0, f)[0].detach() for f in fractions]
