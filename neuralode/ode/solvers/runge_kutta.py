"""Explicit Runge-Kutta: one generic solver that runs any tableau, and its interpolants.

A solver is an object with ``init`` (the state it carries between steps: here ``f(t0, y0)``),
``step`` (one attempt, returning what the controller and the interpolant need), ``error_norm``
and ``interpolant``. The loop (``loop.py``) knows nothing else about the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from neuralode.ode.problem import Field
from neuralode.ode.solvers.base import TableauSolver
from neuralode.ode.solvers.tableaux import ButcherTableau, dense_coefficients


@lru_cache(maxsize=64)
def _coefficients(tab: ButcherTableau, dtype: torch.dtype, device: torch.device):
    """The tableau as tensors, built once per (method, dtype, device)."""
    as_tensor = lambda xs: torch.tensor(xs, dtype=dtype, device=device)  # noqa: E731
    rows = [as_tensor(row) if row else None for row in tab.a]
    b = as_tensor(tab.b)
    b_err = as_tensor(tab.b_err) if tab.b_err is not None else None
    b_err_low = as_tensor(tab.b_err_low) if tab.b_err_low is not None else None
    return rows, b, b_err, b_err_low


@lru_cache(maxsize=64)
def _dense_polynomial(tab: ButcherTableau) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense output's weights as a float64 coefficient matrix (degree + 1, stages) and the powers."""
    coefficients = torch.tensor(dense_coefficients(tab), dtype=torch.float64)
    return coefficients, torch.arange(coefficients.shape[0], dtype=torch.float64)


def dense_weights(tab: ButcherTableau, thetas: list[float], h: float) -> torch.Tensor:
    """``h b_i(theta)`` for every theta, (len(thetas), stages) in float64 on the host: a handful of
    operations however many output times fall inside the step."""
    coefficients, powers = _dense_polynomial(tab)
    theta = torch.tensor(thetas, dtype=torch.float64).unsqueeze(1)
    return (theta ** powers) @ coefficients.mul(h)


@lru_cache(maxsize=64)
def _dense_rows(tab: ButcherTableau, dtype: torch.dtype, device: torch.device):
    return [(c, torch.tensor(row, dtype=dtype, device=device)) for c, row in tab.dense_stages]


def _combine(y: torch.Tensor, stages: torch.Tensor, weights: torch.Tensor, h: float) -> torch.Tensor:
    """``y + h * sum_i weights[i] * stages[i]`` as a single matrix-vector product."""
    flat = stages.reshape(stages.shape[0], -1)
    return torch.addmv(y.reshape(-1), flat.t(), weights, alpha=h).view(y.shape)


@dataclass
class RKStep:
    """One attempted step: the new state and the stages (stacked on a leading dimension)."""

    y1: torch.Tensor
    stages: torch.Tensor


class ExplicitRungeKutta(TableauSolver):
    """Any explicit Runge-Kutta tableau; adaptive when the tableau has an embedded estimate."""

    tableau: ButcherTableau

    def init(self, field: Field, t: float, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        """What a step from (t, y) starts from: the slope there."""
        return field(t, y, perturb)

    def step(self, field: Field, t: float, y: torch.Tensor, h: float, f0: torch.Tensor,
             perturb_end: bool = False) -> RKStep:
        """Advance from ``t`` to ``t + h``. With ``perturb_end`` the stages at ``t + h`` see the
        left-hand limit of ``func`` there (the step ends on a discontinuity).

        Without autograd the stages are written into one preallocated buffer; with autograd
        they are stacked anew at each stage, since an in-place buffer would break the graph.
        """
        tab = self.tableau
        rows, b, _, _ = _coefficients(tab, y.dtype, y.device)
        s, shape, y_flat = tab.num_stages, y.shape, y.reshape(-1)
        grad = torch.is_grad_enabled()
        if grad:
            ks = [f0]
        else:
            stages = torch.empty((s, *shape), dtype=y.dtype, device=y.device)
            stages[0] = f0
            columns = stages.view(s, -1).t()  # stage j is column j: a stage's input is one matrix-vector product
        y_i = y
        for i in range(1, s):
            past = torch.stack(ks).view(i, -1).t() if grad else columns[:, :i]
            y_i = torch.addmv(y_flat, past, rows[i], alpha=h).view(shape)
            k = field(t + tab.c[i] * h, y_i, -1 if perturb_end and tab.c[i] == 1 else 0)
            if grad:
                ks.append(k)
            else:
                stages[i] = k
        if grad:
            stages = torch.stack(ks)
        # FSAL tableaux evaluate their last stage at y1 itself: no second product for it.
        y1 = y_i if tab.last_stage_at_y1 else _combine(y, stages, b, h)
        return RKStep(y1, stages)

    def next_init(self, field: Field, t1: float, step: RKStep, perturb: int = 0) -> torch.Tensor:
        """The slope at the end of an accepted step: the last stage of an FSAL method, unless
        the step ended on a discontinuity and the next one must see the right-hand limit."""
        if self.tableau.fsal and not perturb:
            return step.stages[-1]
        return field(t1, step.y1, perturb)

    def error_norm(self, step: RKStep, h: float, scale, norm) -> torch.Tensor:
        """The local error under ``norm`` of ``error / scale`` (a 0-dim tensor; <= 1 is acceptable)."""
        tab = self.tableau
        _, _, b_err, b_err_low = _coefficients(tab, step.stages.dtype, step.stages.device)
        flat = step.stages.reshape(step.stages.shape[0], -1)
        shape = step.y1.shape
        # A norm is homogeneous: the step size multiplies the norm, not every component of the error.
        err = norm((flat.t() @ b_err).view(shape).div_(scale)) * abs(h)
        if b_err_low is None:
            return err
        # DOP853: blend the 5th- and 3rd-order estimates as Hairer's dop853.f does.
        err_low = norm((flat.t() @ b_err_low).view(shape).div_(scale)) * abs(h)
        denom = (err * err + 0.01 * err_low * err_low).sqrt()
        return torch.where(denom > 0, err * err / denom, err)

    def interpolant(self, field: Field, t: float, h: float, y0: torch.Tensor, step: RKStep,
                    f1: torch.Tensor | None) -> "RKInterpolant":
        return RKInterpolant(self.tableau, field, t, h, y0, step, f1)


def _mix(weights: list[list[float]], parts: torch.Tensor) -> torch.Tensor:
    """``weights @ parts`` over the leading dimension: several output times in one product."""
    w = torch.tensor(weights, dtype=parts.dtype, device=parts.device)
    return (w @ parts.reshape(parts.shape[0], -1)).view(len(weights), *parts.shape[1:])


class Interpolant:
    """The state inside an accepted step from ``t`` to ``t + h``. ``at`` evaluates several times
    at once (one matrix product, one node of the graph), which is how the loop asks for them."""

    t: float
    h: float
    y1: torch.Tensor

    def at(self, times: list[float]) -> list[torch.Tensor]:
        thetas = [(s - self.t) / self.h for s in times]
        inside = [th for th in thetas if th != 1.0]
        values = iter(self._between(inside).unbind(0)) if inside else iter(())
        return [self.y1 if th == 1.0 else next(values) for th in thetas]

    def __call__(self, s: float) -> torch.Tensor:
        return self.at([s])[0]

    def _between(self, thetas: list[float]) -> torch.Tensor:
        raise NotImplementedError


class RKInterpolant(Interpolant):
    """The method's own dense output, else a cubic Hermite polynomial through both ends and their
    slopes. Extra stages (and the end slope) are computed on first use."""

    def __init__(self, tab: ButcherTableau, field: Field, t: float, h: float, y0: torch.Tensor, step: RKStep,
                 f1: torch.Tensor | None):
        if f1 is None and tab.fsal:
            f1 = step.stages[-1]
        self.tab, self.field, self.t, self.h, self.y0, self.step, self.f1 = tab, field, t, h, y0, step, f1
        self.y1 = step.y1
        self._stages = None

    def _slope_at_end(self) -> torch.Tensor:
        if self.f1 is None:
            self.f1 = self.field(self.t + self.h, self.step.y1, -1)
        return self.f1

    def _dense_stages(self) -> torch.Tensor:
        if self._stages is None:
            stages = self.step.stages
            if self.tab.dense_stages:
                ext = torch.cat([stages, self._slope_at_end().unsqueeze(0)])
                for c, row in _dense_rows(self.tab, self.y0.dtype, self.y0.device):
                    ext = torch.cat([ext, self.field(self.t + c * self.h, _combine(self.y0, ext, row, self.h)).unsqueeze(0)])
                stages = ext
            self._stages = stages
        return self._stages

    def _between(self, thetas: list[float]) -> torch.Tensor:
        if self.tab.dense is not None:
            stages = self._dense_stages()
            flat = stages.reshape(stages.shape[0], -1)
            weights = dense_weights(self.tab, thetas, self.h).to(flat.device, flat.dtype)
            return torch.addmm(self.y0.reshape(1, -1), weights, flat).view(len(thetas), *self.y0.shape)
        return hermite(thetas, self.h, self.y0, self.y1, self.step.stages[0], self._slope_at_end())


def hermite_basis(theta):
    """The cubic Hermite basis at ``theta`` (a float, or a tensor of them): the weights of y1, of
    h f0 and of h f1 (y0's is 1 minus y1's). The host's dense output and the batched loop's both
    take them from here."""
    t2 = theta * theta
    t3 = t2 * theta
    return 3 * t2 - 2 * t3, t3 - 2 * t2 + theta, t3 - t2


def hermite(thetas: list[float], h: float, y0, y1, f0, f1) -> torch.Tensor:
    """Cubic Hermite through (y0, f0) and (y1, f1) at each theta: third order, no extra
    evaluation of f. Stacked on a new leading dimension."""
    weights = []
    for th in thetas:
        h01, h10, h11 = hermite_basis(th)
        weights.append([1 - h01, h01, h * h10, h * h11])
    return _mix(weights, torch.stack([y0, y1, f0, f1]))


class HermiteInterpolant(Interpolant):
    """Cubic Hermite between the ends of a fixed step (``interp="cubic"``)."""

    def __init__(self, t: float, h: float, y0, y1, f0, f1):
        self.t, self.h, self.y0, self.y1, self.f0, self.f1 = t, h, y0, y1, f0, f1

    def _between(self, thetas: list[float]) -> torch.Tensor:
        return hermite(thetas, self.h, self.y0, self.y1, self.f0, self.f1)


class LinearInterpolant(Interpolant):
    """Straight line between the ends of a fixed step (torchdiffeq's default for fixed grids)."""

    def __init__(self, t: float, h: float, y0: torch.Tensor, y1: torch.Tensor):
        self.t, self.h, self.y0, self.y1 = t, h, y0, y1

    def _between(self, thetas: list[float]) -> torch.Tensor:
        return _mix([[1 - th, th] for th in thetas], torch.stack([self.y0, self.y1]))
