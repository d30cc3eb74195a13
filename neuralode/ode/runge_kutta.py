"""One generic explicit Runge-Kutta step and the dense-output interpolants."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch

from neuralode.ode.tableaux import ButcherTableau

#: The solver's view of the vector field: float time, tensor state.
Field = Callable[[float, torch.Tensor], torch.Tensor]


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
def _dense_rows(tab: ButcherTableau, dtype: torch.dtype, device: torch.device):
    return [(c, torch.tensor(row, dtype=dtype, device=device)) for c, row in tab.dense_stages]


def _combine(y: torch.Tensor, stages: torch.Tensor, weights: torch.Tensor, h: float) -> torch.Tensor:
    """``y + h * sum_i weights[i] * stages[i]`` as a single matrix-vector product."""
    flat = stages.reshape(stages.shape[0], -1)
    return torch.addmv(y.reshape(-1), flat.t(), weights, alpha=h).view(y.shape)


def rk_step(f: Field, tab: ButcherTableau, t: float, y: torch.Tensor, h: float, k1: torch.Tensor):
    """Advance ``y`` from ``t`` to ``t + h``; ``k1 = f(t, y)`` is given (it is often reused).

    Returns ``(y1, stages)``, ``stages`` stacked on a new leading dimension. Without autograd
    the stages are written into one preallocated buffer; with autograd they are stacked anew
    at each stage, since an in-place buffer would break the recorded graph.
    """
    rows, b, _, _ = _coefficients(tab, y.dtype, y.device)
    s = tab.num_stages
    if torch.is_grad_enabled():
        ks = [k1]
        stages = k1.unsqueeze(0)
        for i in range(1, s):
            ks.append(f(t + tab.c[i] * h, _combine(y, stages, rows[i], h)))
            stages = torch.stack(ks)
    else:
        stages = torch.empty((s, *y.shape), dtype=y.dtype, device=y.device)
        stages[0] = k1
        for i in range(1, s):
            stages[i] = f(t + tab.c[i] * h, _combine(y, stages[:i], rows[i], h))
    return _combine(y, stages, b, h), stages


def error_estimate(tab: ButcherTableau, stages: torch.Tensor, h: float, scale: torch.Tensor, norm) -> torch.Tensor:
    """The local error norm of a step (a 0-dim tensor; <= 1 means accept)."""
    _, _, b_err, b_err_low = _coefficients(tab, stages.dtype, stages.device)
    flat = stages.reshape(stages.shape[0], -1)
    err = norm((flat.t() @ b_err).view(scale.shape) * h / scale)
    if b_err_low is None:
        return err
    # DOP853: blend the 5th- and 3rd-order estimates as Hairer's dop853.f does.
    err_low = norm((flat.t() @ b_err_low).view(scale.shape) * h / scale)
    denom = (err * err + 0.01 * err_low * err_low).sqrt()
    return torch.where(denom > 0, err * err / denom, err)


def dense_stages(f: Field, tab: ButcherTableau, t: float, y0: torch.Tensor, h: float,
                 stages: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
    """The stages the interpolant weighs: the step's own, plus any extra ones it needs."""
    if not tab.dense_stages:
        return stages
    ext = torch.cat([stages, f1.unsqueeze(0)])
    for c, row in _dense_rows(tab, y0.dtype, y0.device):
        ext = torch.cat([ext, f(t + c * h, _combine(y0, ext, row, h)).unsqueeze(0)])
    return ext


def interpolate(tab: ButcherTableau, theta: float, h: float, y0: torch.Tensor, y1: torch.Tensor,
                stages: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
    """The state at ``t0 + theta * h`` inside an accepted step (``stages`` from ``dense_stages``)."""
    if tab.dense is not None:
        weights = torch.tensor(tab.dense(theta), dtype=y0.dtype, device=y0.device)
        return _combine(y0, stages, weights, h)
    # Cubic Hermite through (y0, f0) and (y1, f1): third order, uses no extra evaluation.
    t2, t3 = theta * theta, theta * theta * theta
    h01 = -2 * t3 + 3 * t2
    h10 = t3 - 2 * t2 + theta
    h11 = t3 - t2
    return y0 + (y1 - y0) * h01 + stages[0] * (h * h10) + f1 * (h * h11)
