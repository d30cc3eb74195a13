"""Step-size controllers: where the next step ends, and whether an attempted step is accepted.

``PIDController`` adapts the step to the error estimate (Hairer, Norsett and Wanner II.4;
Soederlind 2003 for the PI/PID forms) and steps exactly onto ``step_t`` and ``jump_t``;
``ConstantSteps`` walks a fixed grid. Both answer the loop's two questions::

    t1, jump = controller.next_time(t, h, t_end)
    accept, h_next = controller.adapt(solver, step, t, h, y0)
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence

import torch

from neuralode.ode.errors import InvalidOptionError

_EPS = 2.0 ** -52


class PIDController:
    """``h_next = h * safety * r_n**(-b1/k) * r_{n-1}**(-b2/k) * r_{n-2}**(-b3/k)``, with ``r`` the
    error ratios, ``k`` the order of the error estimate, ``b1 = icoeff + pcoeff + dcoeff``,
    ``b2 = -(pcoeff + 2 dcoeff)`` and ``b3 = dcoeff``; the factor is clipped to
    ``[min_factor, max_factor]``, may not shrink after an accepted step and may not grow after a
    rejection. ``icoeff=1`` alone is the classic integral controller (the default, as
    torchdiffeq's); Gustafsson's PI is ``icoeff=0.3, pcoeff=0.4``.
    """

    adaptive = True

    def __init__(self, rtol, atol, norm, *, first_step: float | None = None, min_step: float = 0.0,
                 max_step: float = math.inf, safety: float = 0.9, min_factor: float = 0.2,
                 max_factor: float = 10.0, icoeff: float = 1.0, pcoeff: float = 0.0, dcoeff: float = 0.0,
                 step_t: Sequence[float] = (), jump_t: Sequence[float] = ()):
        self.rtol, self.atol, self.norm = rtol, atol, norm
        self.first_step, self.min_step, self.max_step = first_step, min_step, max_step
        self.safety, self.min_factor, self.max_factor = safety, min_factor, max_factor
        self.b1, self.b2, self.b3 = icoeff + pcoeff + dcoeff, -(pcoeff + 2 * dcoeff), dcoeff
        self.step_t = sorted(step_t)
        self.jump_t = sorted(jump_t)
        self._history = [1.0, 1.0]  # r_{n-1}, r_{n-2}

    def initial_step(self, field, t0: float, y0: torch.Tensor, f0: torch.Tensor, error_order: int) -> float:
        if self.first_step is not None:
            h = float(self.first_step)
        else:
            with torch.no_grad():
                h = starting_step(lambda h0: field(t0 + h0, y0 + h0 * f0), y0, f0, error_order, self.rtol,
                                  self.atol, lambda x: float(self.norm(x)))
        return min(max(h, self.min_step), self.max_step)

    def next_time(self, t: float, h: float, t_end: float) -> tuple[float, bool]:
        """Where a step of size ``h`` from ``t`` ends, shortened onto the next of ``t_end``,
        ``step_t`` and ``jump_t`` inside it; ``True`` when it ends on a jump."""
        t1, jump = t + h, False
        i = bisect.bisect_right(self.step_t, t)
        if i < len(self.step_t) and self.step_t[i] < t1:
            t1 = self.step_t[i]
        i = bisect.bisect_right(self.jump_t, t)
        if i < len(self.jump_t) and self.jump_t[i] <= t1:
            t1, jump = self.jump_t[i], True
        if t1 >= t_end:
            t1, jump = t_end, jump and t1 == t_end
        return t1, jump

    def adapt(self, solver, step, t: float, h: float, y0: torch.Tensor) -> tuple[bool, float, float]:
        """Accept or reject a step; the next step size; the error ratio (a float, NaN if non-finite)."""
        with torch.no_grad():
            scale = torch.maximum(y0.abs(), step.y1.abs()).mul_(self.rtol).add_(self.atol)
            ratio = float(solver.error_norm(step, h, scale, self.norm))
        accept = math.isfinite(ratio) and (ratio <= 1.0 or h <= self.min_step)
        factor = step_factor(self, ratio, accept, *self._history, solver.error_order)
        if accept:
            self._history = [max(ratio, 1e-10), self._history[0]]
        return accept, min(max(h * factor, self.min_step), self.max_step), ratio

    def underflow(self, t: float, h: float, span: float) -> bool:
        """Whether ``h`` is too small for ``t + h`` to differ from ``t`` meaningfully."""
        return h < 4 * _EPS * max(abs(t), span)


class ConstantSteps:
    """Steps between consecutive times of a fixed grid; every step is accepted."""

    adaptive = False

    def __init__(self, grid: Sequence[float] | None = None, step_size: float | None = None):
        self.grid = list(grid) if grid is not None else None
        self.step_size = step_size

    def initial_step(self, field, t0, y0, f0, error_order) -> float:
        return self.step_size if self.step_size is not None else self.grid[1] - self.grid[0]

    def next_time(self, t: float, h: float, t_end: float) -> tuple[float, bool]:
        if self.grid is None:  # an open-ended grid (event search): t0 + k step_size
            return t + self.step_size, False
        i = bisect.bisect_right(self.grid, t)
        return (self.grid[i] if i < len(self.grid) else t_end), False

    def adapt(self, solver, step, t, h, y0) -> tuple[bool, float, float]:
        return True, h, 0.0

    def underflow(self, t, h, span) -> bool:
        return False


def uniform_grid(t0: float, t1: float, step_size: float) -> list[float]:
    """``t0 + k * step_size`` up to ``t1``, the last point moved onto ``t1`` (torchdiffeq's grid)."""
    n = math.ceil((t1 - t0) / step_size + 1)
    grid = [t0 + k * step_size for k in range(n)]
    grid[-1] = t1
    if len(grid) > 2 and grid[-2] >= t1:  # (t1 - t0) / step_size was an integer up to rounding
        grid.pop(-2)
    return grid


def check_grid(grid: Sequence[float], t0: float, t1: float) -> list[float]:
    grid = [float(g) for g in grid]
    if len(grid) < 2 or grid[0] != t0 or grid[-1] != t1:
        raise InvalidOptionError(
            f"grid_constructor must return a grid that starts at t[0]={t0} and ends at t[-1]={t1}, "
            f"got {len(grid)} points from {grid[0] if grid else None} to {grid[-1] if grid else None}")
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise InvalidOptionError("grid_constructor must return strictly monotone times, in the direction of t")
    return grid


def _where(cond, a, b):
    """``torch.where`` for tensors (a value per row of a batched solve), a conditional for floats
    (the host loop's one solve), so that one rule serves both without costing the host tensor ops."""
    return torch.where(cond, a, b) if isinstance(cond, torch.Tensor) else (a if cond else b)


def _clip(x, low, high):
    return x.clamp(low, high) if isinstance(x, torch.Tensor) else min(max(x, low), high)


def step_factor(rule, ratio, accept, r1, r2, k: int):
    """The PID rule of :class:`PIDController`: the factor on ``h`` after an attempt with error
    ratio ``ratio`` (accepted or not), past accepted ratios ``r1``, ``r2`` and error order ``k``;
    ``rule`` holds ``safety``, ``b1``-``b3`` and ``min_factor``/``max_factor``. Floats (the host
    loop) or per-row tensors (the batched loop)."""
    finite = (ratio == ratio) & (abs(ratio) < math.inf)
    factor = rule.safety * _where(finite & (ratio > 0), ratio, 1.0) ** (-rule.b1 / k)
    if rule.b2:
        factor = factor * r1 ** (-rule.b2 / k)
    if rule.b3:
        factor = factor * r2 ** (-rule.b3 / k)
    factor = _where(finite, _where(ratio == 0, rule.max_factor, _clip(factor, rule.min_factor, rule.max_factor)),
                    rule.min_factor)
    # A step after an accepted one is not smaller, nor one after a rejection larger: torchdiffeq's
    # rule, so that a solve takes its steps (Hairer's dopri5.f lets an accepted step shrink).
    return _where(accept, _clip(factor, 1.0, math.inf), _clip(factor, 0.0, 1.0))


def starting_step(evaluate, y0: torch.Tensor, f0: torch.Tensor, error_order: int, rtol, atol, norm):
    """Hairer, Norsett and Wanner's starting step; costs one evaluation, ``evaluate(h0)``: the field
    at ``(t0 + h0, y0 + h0 f0)``. ``norm`` gives a float (the host loop) or a float64 tensor of one
    size per row (the batched loop), and the step comes back the same way."""
    scale = y0.abs().mul(rtol).add(atol)
    d0, d1 = norm(y0 / scale), norm(f0 / scale)
    h0 = _where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / _where(d1 > 0, d1, 1.0))
    d2 = norm((evaluate(h0) - f0) / scale) / h0
    d = _where(d2 > d1, d2, d1)
    small = h0 * 1e-3
    h1 = _where(d <= 1e-15, _where(small > 1e-6, small, 1e-6),
                (0.01 / _where(d > 0, d, 1.0)) ** (1.0 / error_order))
    h = _where(h1 < 100 * h0, h1, 100 * h0)
    return _where((h == h) & (abs(h) < math.inf), h, h0)
