"""Continuous normalizing flows (Chen et al. 2018, sec. 4; Grathwohl et al. 2019, FFJORD).

A vector field f(t, z) moves base samples z(t0) ~ N(0, I) to data z(t1). The log-density
follows the instantaneous change of variables, d log p(z(t)) / dt = -trace(df/dz), so the
state [z, log p] is integrated together in one solve:

- sampling (t0 -> t1): start from (z0, log N(z0)); end at (x, log q(x));
- log-density (t1 -> t0): start from (x, 0); end at (z0, a) with a = int_t0^t1 trace dt, and
  log q(x) = log N(z0) - a.

The trace is exact (one vector-Jacobian product per dimension, cheap in 2-D; in closed form for a
field that gives it, as the planar field does) or Hutchinson's
estimate e^T (df/dz) e with one product, the noise e drawn once per solve (it must be the
same function of t in the forward and the adjoint solve, which is why every solve gets its
own :class:`CNFDynamics` holding its noise). Evaluation (``model.eval()``) always uses the
exact trace.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from neuralode.ode.settings import SolverSettings, solve

TRACE_ESTIMATORS = ("exact", "hutchinson")
NOISE_KINDS = ("gaussian", "rademacher")


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def trace_exact(f: torch.Tensor, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """sum_i df_i/dz_i for a batch (B, D) of independent rows: one vjp per dimension.

    Without ``create_graph`` the last vjp frees the graph of ``f`` (see :func:`trace_hutchinson`)."""
    trace = torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)
    dims = z.shape[1]
    for i in range(dims):
        retain = create_graph or i < dims - 1
        (grad,) = torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=retain)
        trace = trace + grad[:, i]
    return trace


def trace_hutchinson(f: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Unbiased estimate e^T (df/dz) e of the trace (E[e e^T] = I): one vjp.

    Without ``create_graph`` nobody differentiates ``f`` again, so the vjp frees its graph at once."""
    (e_jac,) = torch.autograd.grad(f, z, noise, create_graph=create_graph, retain_graph=create_graph)
    return (e_jac * noise).sum(-1)


def sample_noise(like: torch.Tensor, kind: str) -> torch.Tensor:
    """Gaussian or Rademacher (+-1) noise shaped like ``like``; both have E[e e^T] = I."""
    if kind == "gaussian":
        return torch.randn_like(like)
    if kind == "rademacher":
        return torch.randint_like(like, 0, 2) * 2 - 1
    raise ValueError(f"unknown Hutchinson noise {kind!r}; choose one of {NOISE_KINDS}")


class CNFDynamics(nn.Module):
    """d/dt (z, log p) = (f(t, z), -trace(df/dz)) for one solve.

    ``noise`` None means the exact trace, a tensor shaped like z means Hutchinson's estimate
    with that fixed noise. A field with ``forward_with_trace(t, z) -> (dz, trace)`` gives its
    exact trace in closed form, used instead of the vector-Jacobian products.
    """

    def __init__(self, field: nn.Module, noise: torch.Tensor | None = None):
        super().__init__()
        self.field = field
        self.noise = noise

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        z, _ = state
        # Second-order graphs are needed only when someone will differentiate the result:
        # plain backprop through the solver, or the adjoint's backward solve.
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            if self.noise is None and hasattr(self.field, "forward_with_trace"):
                dz, trace = self.field.forward_with_trace(t, z)
            elif self.noise is None:
                dz = self.field(t, z)
                trace = trace_exact(dz, z, create_graph)
            else:
                dz = self.field(t, z)
                trace = trace_hutchinson(dz, z, self.noise, create_graph)
        if not create_graph:
            dz, trace = dz.detach(), trace.detach()
        return dz, -trace


class CNF(nn.Module):
    """A continuous normalizing flow from N(0, I) at ``t0 = 0`` to the data at ``t1``.

    Args:
        field: the vector field, ``field(t, z) -> dz/dt`` with z of shape (B, dim).
        dim: dimension of z.
        t1: integration time.
        solver: :class:`SolverSettings` or a mapping with its keys (gradient strategy, tolerances).
        trace: ``"exact"`` or ``"hutchinson"`` (used in training mode only).
        noise: ``"gaussian"`` or ``"rademacher"``, Hutchinson's noise.
    """

    def __init__(
        self,
        field: nn.Module,
        dim: int = 2,
        t1: float = 1.0,
        solver: SolverSettings | Mapping[str, Any] | None = None,
        trace: str = "exact",
        noise: str = "gaussian",
    ):
        super().__init__()
        if trace not in TRACE_ESTIMATORS:
            raise ValueError(f"model trace={trace!r} is not a trace estimator; choose one of {TRACE_ESTIMATORS}")
        if noise not in NOISE_KINDS:
            raise ValueError(f"model noise={noise!r} is not a noise kind; choose one of {NOISE_KINDS}")
        if t1 <= 0:
            raise ValueError(f"model t1 must be positive, got {t1}")
        self.field, self.dim, self.t1 = field, dim, float(t1)
        self.solver = SolverSettings.from_any(solver)
        self.trace, self.noise = trace, noise

    def _solve(self, state: tuple[torch.Tensor, torch.Tensor], times: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        z = state[0]
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (batch, {self.dim}), got {tuple(z.shape)}")
        noise = sample_noise(z, self.noise) if self.training and self.trace == "hutchinson" else None
        t = torch.tensor(times, dtype=z.dtype, device=z.device)
        dynamics = CNFDynamics(self.field, noise)
        # The noise is a constant of this solve, not a parameter: name the field's parameters.
        return solve(self.solver, dynamics, state, t, adjoint_params=tuple(self.field.parameters()))

    def log_prob(self, x: torch.Tensor, fraction: float = 1.0) -> torch.Tensor:
        """log q(x) of the flow's distribution at time ``fraction * t1`` (1 = the model), shape (B,)."""
        if fraction <= 0:
            return standard_normal_log_prob(x)
        zeros = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        zs, trace_integrals = self._solve((x, zeros), [fraction * self.t1, 0.0])
        return standard_normal_log_prob(zs[-1]) - trace_integrals[-1]

    def sample_with_log_prob(self, z0: torch.Tensor, fraction: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Push base samples ``z0`` to time ``fraction * t1``: points (B, dim) and their log q (B,)."""
        log_q0 = standard_normal_log_prob(z0)
        if fraction <= 0:
            return z0, log_q0
        zs, log_qs = self._solve((z0, log_q0), [0.0, fraction * self.t1])
        return zs[-1], log_qs[-1]

    def sample(self, n: int) -> torch.Tensor:
        """``n`` samples from the model."""
        device = next(self.parameters()).device
        return self.sample_with_log_prob(torch.randn(n, self.dim, device=device))[0]

    def sample_path(self, z0: torch.Tensor, fractions: Sequence[float]) -> list[torch.Tensor]:
        """Positions of base samples ``z0`` at each of ``fractions`` (increasing, in [0, 1]) of the flow."""
        times = [0.0] + [f * self.t1 for f in fractions if f > 0]
        if len(times) == 1:
            return [z0 for _ in fractions]
        zs, _ = self._solve((z0, torch.zeros(z0.shape[0], dtype=z0.dtype, device=z0.device)), times)
        path = list(zs[1:])
        return [z0] * (len(fractions) - len(path)) + path


class PlanarField(nn.Module):
    """The paper's planar CNF: dz/dt = sum_m sigma_m(t) u_m(t) tanh(w_m(t)^T z + b_m(t)).

    The M units' parameters u, w, b and gate sigma = sigmoid(g) come from a small
    hypernetwork of t (two tanh layers of ``hidden`` units), as in the authors' example.
    """

    def __init__(self, dim: int = 2, units: int = 32, hidden: int = 32):
        super().__init__()
        if units < 1 or hidden < 1:
            raise ValueError(f"planar field needs units >= 1 and hidden >= 1, got {units}, {hidden}")
        self.dim, self.units = dim, units
        self.hypernet = nn.Sequential(
            nn.Linear(1, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, units * (2 * dim + 2)),
        )

    def _units(self, t: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = self.hypernet(t.reshape(1, 1).to(z.dtype)).reshape(self.units, 2 * self.dim + 2)
        u, w = params[:, : self.dim], params[:, self.dim : 2 * self.dim]
        b, gate = params[:, 2 * self.dim], torch.sigmoid(params[:, 2 * self.dim + 1])
        return u, w, gate, torch.tanh(z @ w.T + b)  # h: (B, M)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        u, _, gate, h = self._units(t, z)
        return (h * gate) @ u

    def forward_with_trace(self, t: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f(t, z) and trace(df/dz) in closed form: df/dz = sum_m gate_m (1 - h_m^2) u_m w_m^T, so
        the trace is sum_m gate_m (1 - h_m^2) (u_m . w_m). The same value as the autograd trace
        without its vector-Jacobian products, whose double-backward graph made a training step
        1.1-1.5x slower (measured at 40 and 300 evaluations per solve)."""
        u, w, gate, h = self._units(t, z)
        return (h * gate) @ u, ((1 - h**2) * gate) @ (u * w).sum(1)


class ConcatLinear(nn.Module):
    """Linear layer on [t, h]: time enters as one more input."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in + 1, d_out)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([t.expand(h.shape[0], 1).to(h.dtype), h], dim=1))


class ConcatSquashLinear(nn.Module):
    """FFJORD's gated layer: Linear(h) * sigmoid(a t + c) + d t."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.gate = nn.Linear(1, d_out)
        self.shift = nn.Linear(1, d_out, bias=False)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        t = t.reshape(1, 1).to(h.dtype)
        return self.linear(h) * torch.sigmoid(self.gate(t)) + self.shift(t)


TIME_LAYERS = {"concat": ConcatLinear, "concatsquash": ConcatSquashLinear}
ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}


class MLPField(nn.Module):
    """FFJORD-style vector field: ``depth`` hidden layers of ``width`` units, each seeing t."""

    def __init__(
        self, dim: int = 2, width: int = 64, depth: int = 3, activation: str = "tanh", time_layer: str = "concat"
    ):
        super().__init__()
        if time_layer not in TIME_LAYERS:
            raise ValueError(f"model time_layer={time_layer!r} is unknown; choose one of {sorted(TIME_LAYERS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"model activation={activation!r} is unknown; choose one of {sorted(ACTIVATIONS)}")
        if depth < 1 or width < 1:
            raise ValueError(f"MLP field needs depth >= 1 and width >= 1, got {depth}, {width}")
        sizes = [dim] + [width] * depth + [dim]
        self.layers = nn.ModuleList(TIME_LAYERS[time_layer](a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = ACTIVATIONS[activation]()

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(t, h)
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h
