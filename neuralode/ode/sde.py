"""Stochastic differential equations on a fixed grid: Euler-Maruyama and Milstein, Ito, diagonal
noise, gradients by backpropagation through the solver.

    dy = f(t, y) dt + g(t, y) dW,    ys = sdeint(f, g, y0, t, dt=0.01, generator=torch.Generator().manual_seed(0))

``g(t, y)`` is *diagonal* noise: it returns a tensor that broadcasts to ``y``'s shape (y's shape
itself, or for example ``(B, 1, 1, 1)`` for one sigma per example of an image batch), and every
component of ``y`` gets its own independent Brownian motion. The increments are drawn from
``generator`` (``torch.randn``), so a seed fixes the path; ``bm`` gives the increments instead
(a :class:`BrownianGrid` shares one path between solves on different grids: convergence tests).

Methods (``solvers/stochastic.py``): ``euler`` (Euler-Maruyama, strong order 1/2) and
``milstein`` (derivative-free Milstein for diagonal noise, strong order 1). The steps run in the
ODE core's one loop (``loop.py``) on a fixed grid, so the state checks, statistics and errors are
``odeint``'s.

Why not torchsde: SDE-Net needs a few Euler-Maruyama steps with backprop through them, which is
this file; torchsde's adaptive solvers, Brownian trees and stochastic adjoint are not used by any
experiment here, and the core stays torch-only with the same named errors and statistics as
``odeint`` (``collect_stats`` counts the evaluations of ``f`` and ``g``).

This module imports nothing but torch and the core's own loop, solvers, checks and statistics.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from neuralode.ode.controllers import ConstantSteps
from neuralode.ode.errors import InvalidOptionError, InvalidTimeError, StateMismatchError
from neuralode.ode.loop import integrate
from neuralode.ode.problem import DEFAULT_MAX_NUM_STEPS, make_problem
from neuralode.ode.solvers.stochastic import SDE_ORDERS, StochasticSolver
from neuralode.ode.stats import SolveStats, record

SDE_METHODS = tuple(SDE_ORDERS)

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Increments = Callable[[float, float], torch.Tensor]


class BrownianGrid:
    """One Brownian path of shape ``shape`` sampled at ``t0 + k (t1 - t0) / n`` (k = 0..n).

    ``grid(s, t)`` is ``W(t) - W(s)`` for grid times s < t, so solves on any coarser grid whose
    points lie on this one see the same path (sums of the fine increments).
    """

    def __init__(self, t0: float, t1: float, n: int, shape: tuple[int, ...] | torch.Size, *,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None):
        if not (isinstance(n, int) and n >= 1):
            raise InvalidOptionError(f"BrownianGrid needs n >= 1 intervals, got {n!r}")
        if not t1 > t0:
            raise InvalidTimeError(f"BrownianGrid needs t1 > t0, got t0={t0}, t1={t1}")
        self.t0, self.t1, self.n = float(t0), float(t1), n
        h = (self.t1 - self.t0) / n
        gen_device = generator.device if generator is not None else device
        dw = torch.randn((n, *shape), generator=generator, dtype=dtype, device=gen_device) * math.sqrt(h)
        self.w = torch.cat([torch.zeros((1, *shape), dtype=dtype, device=dw.device), dw.cumsum(0)]).to(device)

    def index(self, t: float) -> int:
        k = (t - self.t0) / (self.t1 - self.t0) * self.n
        i = round(k)
        if abs(k - i) > 1e-6 or not 0 <= i <= self.n:
            raise InvalidTimeError(f"t={t} is not a point of this BrownianGrid ({self.n} steps over [{self.t0}, {self.t1}])")
        return i

    def __call__(self, s: float, t: float) -> torch.Tensor:
        return self.w[self.index(t)] - self.w[self.index(s)]

    @property
    def final(self) -> torch.Tensor:
        """``W(t1) - W(t0)``."""
        return self.w[-1] - self.w[0]


def sdeint(drift: Field, diffusion: Field, y0: torch.Tensor, t: torch.Tensor, *, method: str = "euler",
           dt: float | None = None, generator: torch.Generator | None = None,
           bm: Increments | None = None, max_num_steps: int = DEFAULT_MAX_NUM_STEPS) -> torch.Tensor:
    """Solve ``dy = drift(t, y) dt + diffusion(t, y) dW`` (Ito, diagonal noise) from ``y0`` at
    ``t[0]``; return the states at every time of ``t``, shape ``(len(t), *y0.shape)``.

    ``t`` is strictly increasing. Each interval between output times is split into
    ``ceil(length / dt)`` equal steps (one step when ``dt`` is None). The Brownian increments are
    ``sqrt(h) * randn`` from ``generator`` (torch's global generator when None), or ``bm(s, t)``.
    Gradients reach ``y0``, and the parameters of ``drift`` and ``diffusion``, by autograd through
    the steps. A grid of more than ``max_num_steps`` steps is refused before it is built.
    """
    if method not in SDE_METHODS:
        raise InvalidOptionError(f"unknown SDE method {method!r}; the methods are: {', '.join(SDE_METHODS)}")
    if not isinstance(y0, torch.Tensor) or not torch.is_floating_point(y0):
        raise StateMismatchError(f"y0 must be a floating-point tensor, got {type(y0).__name__}"
                                 + (f" of {y0.dtype}" if isinstance(y0, torch.Tensor) else ""))
    problem = make_problem(lambda tt, y: _checked_drift(drift, tt, y), y0, t)
    if problem.direction < 0:
        raise InvalidTimeError("sdeint integrates forward in time only: t must be strictly increasing")
    if dt is not None and not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise InvalidOptionError(f"dt must be a positive number of time units (or None: one step per interval), got {dt!r}")
    diffusion_calls, broadcasting = 0, set()  # shapes of g that broadcast to the state's

    def g(s: float, y: torch.Tensor) -> torch.Tensor:
        nonlocal diffusion_calls
        diffusion_calls += 1
        out = diffusion(torch.tensor(s, dtype=y.dtype, device=y.device), y)
        if not isinstance(out, torch.Tensor):
            raise StateMismatchError(f"diffusion(t, y) must return a tensor, got {type(out).__name__}")
        if out.shape in broadcasting:  # checked once a shape: torch.broadcast_shapes costs more than a step
            return out
        try:
            shape = torch.broadcast_shapes(out.shape, y.shape)
        except RuntimeError:
            shape = None
        if shape != y.shape:
            raise StateMismatchError(
                f"diffusion(t, y) returned shape {tuple(out.shape)}, which does not broadcast to the state's shape "
                f"{tuple(y.shape)}; for diagonal noise return the state's shape, or one that broadcasts to it "
                f"(e.g. (batch, 1, 1, 1): one sigma per example)")
        broadcasting.add(out.shape)
        return out

    def increment(s: float, e: float, y: torch.Tensor) -> torch.Tensor:
        if bm is not None:
            dw = bm(s, e)
            if not isinstance(dw, torch.Tensor) or dw.shape != y.shape:
                raise StateMismatchError(f"bm(s, t) must return increments of the state's shape {tuple(y.shape)}, got "
                                         + (f"shape {tuple(dw.shape)}" if isinstance(dw, torch.Tensor) else type(dw).__name__))
            return dw.to(dtype=y.dtype, device=y.device)
        device = generator.device if generator is not None else y.device
        noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=device)
        return noise.to(y.device) * math.sqrt(e - s)

    stats = SolveStats()
    solver = StochasticSolver(method, g, increment)
    solution = integrate(problem, solver, ConstantSteps(_grid(problem.times, dt, max_num_steps)), stats)
    stats.nfe = problem.nfe + diffusion_calls
    record(stats)
    return torch.stack(solution.ys)


def _checked_drift(drift: Field, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = drift(t, y)
    if not isinstance(out, torch.Tensor) or out.shape != y.shape:
        raise StateMismatchError(
            f"drift(t, y) must return a tensor of the state's shape {tuple(y.shape)}, got "
            + (f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__))
    return out


def _grid(times: list[float], dt: float | None, max_num_steps: int) -> list[float]:
    """Each interval between output times in ``ceil(length / dt)`` equal steps (one when dt is
    None), every output time a grid point; refused when longer than ``max_num_steps``."""
    counts = [1 if dt is None else max(1, math.ceil((b - a) / dt - 1e-9)) for a, b in zip(times, times[1:])]
    if sum(counts) > max_num_steps:
        raise InvalidOptionError(f"dt={dt:g} over [t={times[0]:g}, t={times[-1]:g}] makes {sum(counts):,} steps, more "
                                 f"than max_num_steps={max_num_steps:,}; use a larger dt, or raise max_num_steps")
    grid = [times[0]]
    for (a, b), n in zip(zip(times, times[1:]), counts):
        grid.extend(a + (b - a) * k / n for k in range(1, n))
        grid.append(b)
    return grid
