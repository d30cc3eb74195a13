"""Adams linear multistep methods: torchdiffeq's fixed-grid ``explicit_adams`` / ``implicit_adams``
(``fixed_adams``), and ``adams``, an adaptive variable-step, variable-order Adams-Bashforth-Moulton.

A multistep solver carries its *history* between steps (what ``init`` / ``next_init`` return and
``step`` starts from): the last slopes ``f(t_j, y_j)``, newest first, stacked in one tensor, and
their times. The coefficients are computed for the actual past times, so an uneven grid gets
the right formula; on an even grid they are the classical Adams coefficients (as torchdiffeq's
tables). Checkpointed gradients store the history at each checkpoint (``multistep = True``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from neuralode.ode.errors import InvalidOptionError
from neuralode.ode.problem import CALLBACKS, Field, rms_norm
from neuralode.ode.solvers.base import Solver
from neuralode.ode.solvers.runge_kutta import Interpolant

MAX_ORDER = 12


@lru_cache(maxsize=1)
def _gauss_legendre(m: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre points and weights on [0, 1] (Golub-Welsch); exact to degree 2m - 1 = 15,
    enough for the Lagrange polynomials of up to 14 nodes integrated below."""
    k = torch.arange(1, m, dtype=torch.float64)
    beta = k / torch.sqrt(4 * k * k - 1)
    x, v = torch.linalg.eigh(torch.diag(beta, 1) + torch.diag(beta, -1))
    return (x + 1) / 2, v[0] ** 2


def quadrature_weights(nodes: tuple[float, ...], uppers: tuple[float, ...]) -> torch.Tensor:
    """``w[u, j] = integral from 0 to uppers[u] of L_j``, ``L_j`` the Lagrange basis through
    ``nodes`` (times in units of the step, from its start). ``y0 + h w[u] @ slopes`` is the Adams
    formula through those slopes, at ``t + uppers[u] h``. Quadrature of the product form rather
    than monomial coefficients, which lose digits at high order."""
    gx, gw = _gauss_legendre()
    x = torch.tensor(nodes, dtype=torch.float64)
    up = torch.tensor(uppers, dtype=torch.float64)
    s = up[:, None] * gx[None, :]  # (U, m) quadrature points
    n = len(nodes)
    # factor[u, j, i, q] = (s_q - x_i) / (x_j - x_i) for i != j, 1 for i == j
    gap = x[:, None] - x[None, :]
    eye = torch.eye(n, dtype=torch.bool)
    factor = (s[:, None, None, :] - x[None, None, :, None]) / torch.where(eye, 1.0, gap)[None, :, :, None]
    factor = torch.where(eye[None, :, :, None], 1.0, factor)
    basis = factor.prod(dim=2)  # (U, n, m)
    return up[:, None] * (basis @ gw)


def adams_weights(nodes: tuple[float, ...], orders: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """For each order q: the Adams-Bashforth weights through ``nodes[:q]`` and the Adams-Moulton
    weights through ``(1,) + nodes[:q]``, padded with zeros to ``(len(orders), n)`` and
    ``(len(orders), n + 1)``; one batched quadrature for all of them (a step needs three orders)."""
    gx, gw = _gauss_legendre()
    z = torch.tensor((1.0,) + nodes, dtype=torch.float64)
    n = len(z)
    index = torch.arange(n)
    q = torch.tensor(orders)
    # the sets: AB_q uses z[1:q+1], AM_q uses z[0:q+1]
    active = torch.cat([(index[None] >= 1) & (index[None] <= q[:, None]), index[None] <= q[:, None]])  # (S, n)
    gap = z[:, None] - z[None, :]
    eye = torch.eye(n, dtype=torch.bool)
    factor = (gx[None, None, :] - z[None, :, None]) / torch.where(eye, 1.0, gap)[:, :, None]  # (j, i, m)
    use = active[:, None, :] & ~eye[None]  # (S, j, i)
    basis = torch.where(use[..., None], factor[None], 1.0).prod(dim=2)  # (S, j, m)
    weights = (basis @ gw) * active  # (S, n)
    return weights[:len(orders), 1:], weights[len(orders):]


@lru_cache(maxsize=256)
def _even_weights(nodes: tuple[float, ...]) -> torch.Tensor:
    return quadrature_weights(nodes, (1.0,))[0]


def _combine(weights: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """``sum_j weights[j] * slopes[j]`` (weights are float64; cast to the state's dtype)."""
    w = weights.to(slopes.device, slopes.dtype)
    return torch.tensordot(w, slopes, dims=1)


@dataclass
class History:
    """The last slopes ``f(t_j, y_j)`` (newest first) and their times; ``order``: the adaptive
    solver's order for the next step."""

    times: tuple[float, ...]
    slopes: torch.Tensor  # (len(times), *state shape)
    order: int = 1

    @property
    def slope(self) -> torch.Tensor:
        """The newest slope, f at the current point (the loop checks it, and starts the step size from it)."""
        return self.slopes[0]

    # The tensors in the history, and the history with them replaced: the checkpointed gradient
    # replays a segment from a stored history and passes gradients back through it.
    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.slopes,)

    def with_tensors(self, tensors) -> "History":
        return replace(self, slopes=tensors[0])


@dataclass
class AdamsStep:
    y1: torch.Tensor
    history: History  # the history the step started from
    converged: bool = True  # implicit_adams: did the corrector iteration converge
    # adaptive adams: the order used, the slopes and nodes of its corrector (dense output),
    # the error ratio, its order, and the order chosen for the next step.
    order: int = 0
    corrector: tuple = ()
    ratio: float = 0.0
    error_order: int = 2
    next_order: int = 1

    @property
    def stages(self) -> tuple[torch.Tensor]:
        """The slope at the start, where an RK step keeps it (the cubic Hermite output reads it)."""
        return (self.history.slopes[0],)


def _push(history: History, t1: float, f1: torch.Tensor, keep: int, order: int = 1) -> History:
    """The history after a step: ``f1`` at ``t1`` in front, the oldest beyond ``keep`` dropped."""
    return History((t1,) + history.times[:keep - 1], torch.cat([f1.unsqueeze(0), history.slopes[:keep - 1]]), order)


def _check_int(options: dict, key: str, low: int, high: int, prefix: str) -> None:
    value = options.get(key)
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise InvalidOptionError(f"{prefix}option {key!r} must be an integer in [{low}, {high}], got {value!r}")


# --------------------------------------------------------------------------- fixed grid
_RK4_START = 3  # torchdiffeq: Adams from 3 past slopes on, the 3/8-rule RK4 before


def rk4_38(field: Field, t: float, y: torch.Tensor, h: float, f0: torch.Tensor, perturb_end: bool) -> torch.Tensor:
    """One step of Kutta's 3/8-rule RK4 (torchdiffeq's start-up for its Adams methods)."""
    k2 = field(t + h / 3, y + h * f0 / 3)
    k3 = field(t + 2 * h / 3, y + h * (k2 - f0 / 3))
    k4 = field(t + h, y + h * (f0 - k2 + k3), -1 if perturb_end else 0)
    return y + (f0 + 3 * (k2 + k3) + k4) * (h * 0.125)


class FixedGridAdams(Solver):
    """torchdiffeq's ``AdamsBashforthMoulton`` on a fixed grid.

    Each step evaluates ``f`` at its start and puts it in front of the history (at most
    ``max_order - 1`` slopes). With fewer than 3 slopes the step is the 3/8-rule RK4; then the
    Adams-Bashforth formula through all the slopes (order up to ``max_order - 1``). ``implicit``
    corrects it by Adams-Moulton (one order higher) iterated at most ``max_iters`` times until
    successive increments agree to ``rtol``/``atol`` (max norm); when they do not, the oldest
    slope is dropped (so the order does not grow) and a warning is given, as torchdiffeq does.
    On an even grid the results are torchdiffeq's; on an uneven one (a ``grid_constructor``, or
    the last step of a ``step_size`` grid cut short at ``t[-1]``) the coefficients follow the
    actual times, where torchdiffeq's even-grid coefficients lose the order.
    """

    adaptive = False
    multistep = True
    callbacks = CALLBACKS[:1]
    error_order = 1  # unused: fixed steps

    def __init__(self, name: str, implicit: bool):
        self.name, self.implicit = name, implicit
        self.extra_options = ("max_order", "max_iters") if implicit else ("max_order",)
        self.max_order, self.max_iters = MAX_ORDER, 4
        self.rtol, self.atol = 1e-7, 1e-9
        self._set_order()

    def _set_order(self) -> None:
        """The global order: the Adams formula's, but capped by the start-up, whose one step of each
        order up to max_order leaves its local error: O(h^4) from the first Adams-Bashforth step
        (AB3), O(h^5) from the RK4 steps and the first Adams-Moulton one (AM4). Below max_order=4
        it is RK4."""
        if self.max_order < _RK4_START + 1:
            self.order = 4
        else:
            self.order = min(self.max_order, 5) if self.implicit else min(self.max_order - 1, 4)

    def configure(self, options: dict, prefix: str = "") -> None:
        _check_int(options, "max_order", 1, MAX_ORDER, prefix)
        _check_int(options, "max_iters", 1, 10_000, prefix)
        self.max_order = options.get("max_order", self.max_order)
        self.max_iters = options.get("max_iters", self.max_iters)
        if self.max_order < _RK4_START + 1:
            warnings.warn(f"{prefix}max_order={self.max_order} is below {_RK4_START + 1}, so {self.name} "
                          "reduces to rk4 (the 3/8 rule)", stacklevel=4)
        self._set_order()

    def prepare(self, controller, rtol, atol, problem):
        """The tolerances of the corrector iteration (odeint's rtol/atol)."""
        self.rtol, self.atol = rtol, atol
        return controller

    def init(self, field: Field, t: float, y: torch.Tensor, perturb: int = 0) -> History:
        return History((t,), field(t, y, perturb).unsqueeze(0))

    def slope_of(self, carried: History) -> torch.Tensor:
        return carried.slope

    def step(self, field: Field, t: float, y: torch.Tensor, h: float, history: History,
             perturb_end: bool = False) -> AdamsStep:
        slopes = history.slopes
        order = min(len(history.times), self.max_order - 1)
        if order < _RK4_START:
            return AdamsStep(rk4_38(field, t, y, h, slopes[0], perturb_end), history)
        # Past times in steps back from t; rounded so that an even grid hits the cache (and
        # gets exactly the classical coefficients) despite rounding in the times.
        nodes = tuple(round((s - t) / h, 10) for s in history.times[:order])
        dy = h * _combine(_even_weights(nodes), slopes[:order])
        converged = True
        if self.implicit:
            moulton = _even_weights((1.0,) + nodes)
            known = h * _combine(moulton[1:], slopes[:order])
            for _ in range(self.max_iters):
                previous = dy
                dy = (h * float(moulton[0])) * field(t + h, y + dy, -1 if perturb_end else 0) + known
                with torch.no_grad():
                    tol = self.atol + self.rtol * torch.maximum(previous.abs(), dy.abs())
                    converged = bool(((previous - dy).abs() / tol).max() < 1)
                if converged:
                    break
            if not converged:
                warnings.warn(f"{self.name}: the corrector iteration did not converge at t={t:.6g} in "
                              f"max_iters={self.max_iters}; the solution may be inaccurate", stacklevel=2)
        return AdamsStep(y + dy, history, converged)

    def next_init(self, field: Field, t1: float, step: AdamsStep, perturb: int = 0) -> History:
        history = step.history
        if not step.converged:  # torchdiffeq drops the oldest slope
            history = History(history.times[:-1], history.slopes[:-1])
        return _push(history, t1, field(t1, step.y1, perturb), max(self.max_order - 1, 1))

    def error_norm(self, step, h, scale, norm):
        raise NotImplementedError("fixed-step Adams has no error estimate")

    def interpolant(self, field, t, h, y0, step, f1):
        raise NotImplementedError("fixed-step outputs use options['interp']")


# --------------------------------------------------------------------------- adaptive
class AdamsInterpolant(Interpolant):
    """The corrector's polynomial: ``y0 + h * integral from 0 to theta`` of the polynomial through the
    step's slopes (order of the step; exactly ``y1`` at the end)."""

    def __init__(self, t: float, h: float, y0: torch.Tensor, y1: torch.Tensor, nodes, slopes):
        self.t, self.h, self.y0, self.y1, self.nodes, self.slopes = t, h, y0, y1, nodes, slopes

    def _between(self, thetas: list[float]) -> torch.Tensor:
        w = quadrature_weights(self.nodes, tuple(thetas)).to(self.slopes.device, self.slopes.dtype)
        flat = self.slopes.reshape(self.slopes.shape[0], -1)
        return self.y0.unsqueeze(0) + self.h * (w @ flat).view(len(thetas), *self.y0.shape)


class AdaptiveAdams(Solver):
    """Variable-step, variable-order Adams-Bashforth-Moulton in PECE form (Shampine and Gordon 1975;
    the Adams half of VODE), inside the loop and its PID step-size controller.

    At order ``k`` a step predicts with Adams-Bashforth through the last ``k`` slopes (order ``k``),
    evaluates ``f`` there, and corrects with Adams-Moulton through those slopes and the new one
    (order ``k + 1``, the result kept: local extrapolation); ``f`` at the corrected point starts the
    next step. Two evaluations a step, whatever the order, against six for dopri5. The error
    estimate is corrector minus predictor, ``O(h^(k+1))``. The same difference at orders ``k - 1`` and
    ``k + 1`` says which order allows the longest next step; the solver hands that order's
    estimate and order to the controller (``error_order``), so the controller sizes the step for
    the order that will take it. Orders 1 to ``max_order - 1`` (the corrector's order up to
    ``max_order`` = 12); the step at most doubles, as in Shampine-Gordon, since multistep formulas
    lose accuracy and stability when the step jumps.
    """

    name = "adams"
    adaptive = True
    multistep = True
    callbacks = CALLBACKS
    extra_options = ("max_order",)
    max_growth = 2.0

    def __init__(self):
        self.max_order = MAX_ORDER
        self.order = self.max_order
        self.error_order = 2  # order 1 to start: the first step is sized for an O(h^2) error
        self.rtol, self.atol, self.norm = 1e-7, 1e-9, rms_norm

    def configure(self, options: dict, prefix: str = "") -> None:
        _check_int(options, "max_order", 2, MAX_ORDER, prefix)
        self.max_order = self.order = options.get("max_order", self.max_order)

    def order_taken(self, step: AdamsStep) -> int:
        return step.order

    def prepare(self, controller, rtol, atol, problem):
        """The controller's tolerances and norm: the order is chosen inside ``step``, so that a
        replayed step (checkpointed gradient) chooses the same order as the forward solve."""
        self.rtol, self.atol, self.norm = controller.rtol, controller.atol, controller.norm
        self.error_order = 2
        return controller

    def init(self, field: Field, t: float, y: torch.Tensor, perturb: int = 0) -> History:
        return History((t,), field(t, y, perturb).unsqueeze(0), order=1)

    def slope_of(self, carried: History) -> torch.Tensor:
        return carried.slope

    def step(self, field: Field, t: float, y: torch.Tensor, h: float, history: History,
             perturb_end: bool = False) -> AdamsStep:
        k = min(history.order, len(history.times))
        nodes = tuple((s - t) / h for s in history.times)
        # the orders the step may choose next: k - 1, k, k + 1 (as the history allows)
        orders = tuple(q for q in (k, k - 1, k + 1) if 1 <= q <= min(len(nodes), self.max_order - 1))
        bashforth, moulton = adams_weights(nodes, orders)
        slopes = history.slopes
        y_p = y + h * _combine(bashforth[0, :k], slopes[:k])
        f_p = field(t + h, y_p, -1 if perturb_end else 0)
        y1 = y + h * (float(moulton[0, 0]) * f_p + _combine(moulton[0, 1:k + 1], slopes[:k]))
        step = AdamsStep(y1, history, order=k, corrector=((1.0,) + nodes[:k], torch.cat([f_p.unsqueeze(0), slopes[:k]])))
        self._choose_order(step, y, f_p, h, orders, bashforth, moulton)
        return step

    def _choose_order(self, step: AdamsStep, y: torch.Tensor, f_p: torch.Tensor, h: float, orders,
                      bashforth: torch.Tensor, moulton: torch.Tensor) -> None:
        """The error ratio of order k; if acceptable, the order q in {k-1, k, k+1} with the longest
        next step ``h * ratio_q^(-1/(q+1))``, and its ratio (its error order q + 1)."""
        k, n = step.order, bashforth.shape[1]
        with torch.no_grad():
            slopes = step.history.slopes.detach()[:n]
            scale = torch.maximum(y.detach().abs(), step.y1.detach().abs()) * self.rtol + self.atol
            # corrector (order q + 1) minus predictor (order q), for each order at once
            as_state = dict(device=slopes.device, dtype=slopes.dtype)  # weights are float64 on the CPU
            diffs = moulton[:, :1].to(**as_state) * f_p.detach().reshape(1, -1) + \
                (moulton[:, 1:] - bashforth).to(**as_state) @ slopes.reshape(n, -1)
            diffs = (h * diffs).view(len(orders), *y.shape)

            ratios = {k: float(self.norm(diffs[0] / scale))}
            step.ratio, step.error_order, step.next_order = ratios[k], k + 1, k
            if not ratios[k] <= 1.0:  # rejected (or NaN): same order, smaller step
                return
            for i, q in enumerate(orders[1:], 1):
                ratios[q] = float(self.norm(diffs[i] / scale))

            def growth(q: int) -> float:
                r = ratios[q]
                return math.inf if r == 0 else r ** (-1.0 / (q + 1))

            q = max(ratios, key=lambda q: (growth(q), -abs(q - k)))
            # Cap the growth at max_growth: a ratio no smaller than max_growth^-(q+1).
            step.ratio = min(max(ratios[q], self.max_growth ** -(q + 1)), 1.0)
            step.error_order, step.next_order = q + 1, q

    def next_init(self, field: Field, t1: float, step: AdamsStep, perturb: int = 0) -> History:
        f1 = field(t1, step.y1, perturb)
        if perturb:  # the step ended on a jump_t: the slopes before it are of another piece of f
            return History((t1,), f1.unsqueeze(0), order=1)
        return _push(step.history, t1, f1, self.max_order, step.next_order)

    def error_norm(self, step: AdamsStep, h, scale, norm) -> torch.Tensor:
        """The ratio ``step`` computed (the controller's scale and norm are the same ones); the
        controller reads ``error_order`` next, to size the step for the chosen order."""
        self.error_order = step.error_order
        return torch.tensor(step.ratio)

    def interpolant(self, field, t: float, h: float, y0: torch.Tensor, step: AdamsStep, f1) -> AdamsInterpolant:
        nodes, slopes = step.corrector
        return AdamsInterpolant(t, h, y0, step.y1, nodes, slopes)
