"""The integration loops and ``odeint``.

Time is kept in Python floats (float64) inside the loops; ``func`` receives it as a 0-dim
tensor of the state's dtype and device, which is what a float32 model expects to concatenate
with its input. A decreasing ``t`` is solved as an increasing one in ``s = -t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from neuralode.ode import stats as _stats
from neuralode.ode.controller import ComponentRMSNorm, PIController, initial_step, rms_norm
from neuralode.ode.errors import (
    InvalidOptionError,
    InvalidTimeError,
    MaxStepsExceededError,
    NonFiniteStateError,
    StateMismatchError,
    StepSizeUnderflowError,
)
from neuralode.ode.runge_kutta import Field, dense_stages, error_estimate, interpolate, rk_step
from neuralode.ode.tableaux import ADAPTIVE_METHODS, FIXED_METHODS, TABLEAUX, ButcherTableau

FIXED_OPTIONS = ("step_size", "grid")
ADAPTIVE_OPTIONS = ("first_step", "min_step", "max_step", "max_num_steps", "norm",
                    "safety", "min_factor", "max_factor", "icoeff", "pcoeff")
DEFAULT_MAX_NUM_STEPS = 10_000
_EPS = 2.0 ** -52


# --------------------------------------------------------------------------- input checks
def get_tableau(method: str) -> ButcherTableau:
    if method not in TABLEAUX:
        raise InvalidOptionError(
            f"unknown ODE method {method!r}; adaptive methods: {', '.join(ADAPTIVE_METHODS)}; "
            f"fixed-step methods: {', '.join(FIXED_METHODS)}"
        )
    return TABLEAUX[method]


def check_options(tab: ButcherTableau, options: dict | None) -> dict:
    options = dict(options or {})
    valid = ADAPTIVE_OPTIONS if tab.adaptive else FIXED_OPTIONS
    unknown = sorted(set(options) - set(valid))
    if unknown:
        kind = "adaptive" if tab.adaptive else "fixed-step"
        raise InvalidOptionError(
            f"unknown option(s) {unknown} for {kind} method {tab.name!r}; valid options: {', '.join(valid)}"
        )
    for key in ("step_size", "first_step", "min_step", "max_step"):
        value = options.get(key)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InvalidOptionError(f"option {key!r} must be a positive finite number, got {value!r}")
    if options.get("step_size") is not None and options.get("grid") is not None:
        raise InvalidOptionError("give either options['step_size'] or options['grid'], not both")
    norm = options.get("norm")
    if norm is not None and not callable(norm) and norm != "rms":
        hint = " ('seminorm' applies to the adjoint: pass it in adjoint_options)" if norm == "seminorm" else ""
        raise InvalidOptionError(f"option 'norm' must be 'rms' or a callable, got {norm!r}{hint}")
    return options


def check_times(t: Any) -> tuple[list[float], int]:
    """Return the output times as floats and the direction of integration (+1 or -1)."""
    if not isinstance(t, torch.Tensor):
        raise InvalidTimeError(f"t must be a 1-D torch.Tensor of output times, got {type(t).__name__}")
    if t.dim() != 1 or t.numel() == 0:
        raise InvalidTimeError(f"t must be a non-empty 1-D tensor, got shape {tuple(t.shape)}")
    times = t.detach().to("cpu", torch.float64).tolist()
    if not all(math.isfinite(x) for x in times):
        raise InvalidTimeError(f"t contains non-finite values: {times}")
    if len(times) == 1:
        return times, 1
    steps = [b - a for a, b in zip(times, times[1:])]
    if all(d > 0 for d in steps):
        return times, 1
    if all(d < 0 for d in steps):
        return times, -1
    bad = next(i for i, d in enumerate(steps) if (d > 0) != (steps[0] > 0) or d == 0)
    raise InvalidTimeError(
        f"t must be strictly increasing or strictly decreasing; t[{bad}]={times[bad]} and "
        f"t[{bad + 1}]={times[bad + 1]} break the order (sort t, and drop repeated times)"
    )


def check_derivative(dy: Any, y: torch.Tensor, where: str = "") -> None:
    if not isinstance(dy, torch.Tensor):
        raise StateMismatchError(f"func must return a tensor{where}, got {type(dy).__name__}")
    if dy.shape != y.shape or dy.dtype != y.dtype or dy.device != y.device:
        raise StateMismatchError(
            f"func returned dy/dt of shape {tuple(dy.shape)}, dtype {dy.dtype}, device {dy.device}{where}, "
            f"but the state has shape {tuple(y.shape)}, dtype {y.dtype}, device {y.device}; "
            "func(t, y) must return a tensor like y"
        )


# --------------------------------------------------------------------------- problem set-up
@dataclass
class Problem:
    """A user's problem in the solver's terms: one state tensor, increasing float times."""

    field: Field  # f(s, y) in solver time s
    user_field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # f(t, y) in user time, flat state
    y0: torch.Tensor
    times: list[float]  # increasing solver times (s = direction * t)
    direction: int
    sizes: list[int] | None  # component sizes of a flattened tuple state
    shapes: list[torch.Size] | None

    def unpack(self, ys: torch.Tensor):
        """Solutions stacked over time, back in the user's structure."""
        if self.shapes is None:
            return ys
        parts = ys.split(self.sizes, dim=1)
        return tuple(p.reshape(ys.shape[0], *shape) for p, shape in zip(parts, self.shapes))


def flatten_state(y0) -> tuple[torch.Tensor, list[int] | None, list[torch.Size] | None]:
    if isinstance(y0, torch.Tensor):
        if not torch.is_floating_point(y0):
            raise StateMismatchError(f"y0 must be a floating-point tensor, got dtype {y0.dtype}")
        return y0, None, None
    if not isinstance(y0, (tuple, list)) or not y0 or not all(isinstance(y, torch.Tensor) for y in y0):
        raise StateMismatchError(f"y0 must be a tensor or a non-empty tuple of tensors, got {type(y0).__name__}")
    first = y0[0]
    for i, y in enumerate(y0):
        if not torch.is_floating_point(y) or y.dtype != first.dtype or y.device != first.device:
            raise StateMismatchError(
                f"all tensors of a tuple state must share one floating dtype and device; y0[0] is "
                f"{first.dtype} on {first.device}, y0[{i}] is {y.dtype} on {y.device}"
            )
    shapes = [y.shape for y in y0]
    sizes = [y.numel() for y in y0]
    return torch.cat([y.reshape(-1) for y in y0]), sizes, shapes


def make_problem(func: Callable, y0, t: torch.Tensor) -> Problem:
    times, direction = check_times(t)
    flat_y0, sizes, shapes = flatten_state(y0)
    dtype, device = flat_y0.dtype, flat_y0.device

    if shapes is None:
        user_field = func
    else:
        def user_field(tt, y):
            dys = func(tt, tuple(p.view(s) for p, s in zip(y.split(sizes), shapes)))
            if not isinstance(dys, (tuple, list)) or len(dys) != len(shapes):
                raise StateMismatchError(
                    f"the state is a tuple of {len(shapes)} tensors, so func must return a tuple of "
                    f"{len(shapes)} tensors, got {type(dys).__name__}"
                    + (f" of length {len(dys)}" if isinstance(dys, (tuple, list)) else "")
                )
            for i, (dy, shape) in enumerate(zip(dys, shapes)):
                if not isinstance(dy, torch.Tensor) or dy.shape != shape:
                    got = tuple(dy.shape) if isinstance(dy, torch.Tensor) else type(dy).__name__
                    raise StateMismatchError(f"func returned {got} for state component {i} of shape {tuple(shape)}")
            return torch.cat([dy.reshape(-1) for dy in dys])

    if direction > 0:
        def field(s: float, y: torch.Tensor) -> torch.Tensor:
            return user_field(torch.full((), s, dtype=dtype, device=device), y)
    else:
        def field(s: float, y: torch.Tensor) -> torch.Tensor:
            return -user_field(torch.full((), -s, dtype=dtype, device=device), y)

    return Problem(field, user_field, flat_y0, [direction * x for x in times], direction, sizes, shapes)


def make_norm(option, sizes: Sequence[int] | None):
    if callable(option):
        return option
    return rms_norm if sizes is None else ComponentRMSNorm(sizes)


# --------------------------------------------------------------------------- the loops
def _nonfinite(y: torch.Tensor) -> bool:
    return not bool(torch.isfinite(y).all())


def solve_fixed(f: Field, y0: torch.Tensor, times: list[float], tab: ButcherTableau, options: dict,
                stats: _stats.SolveStats, direction: int = 1) -> torch.Tensor:
    """Fixed steps; every output time is a step boundary, so no interpolation is needed."""
    step_size = options.get("step_size")
    grid = options.get("grid")
    if grid is not None:
        grid_times = sorted(direction * x for x in torch.as_tensor(grid).detach().double().cpu().tolist())
    ys, y, t = [y0], y0, times[0]
    step = 0
    for t_next in times[1:]:
        if step_size is not None:
            n = max(1, math.ceil((t_next - t) / step_size - 1e-9))
            knots = [t + (t_next - t) * j / n for j in range(1, n)]
        elif grid is not None:
            knots = [g for g in grid_times if t < g < t_next]
        else:
            knots = []
        for t_a, t_b in zip([t] + knots, knots + [t_next]):
            k1 = f(t_a, y)
            if step == 0:
                check_derivative(k1, y, " at the initial time")
            y, _ = rk_step(f, tab, t_a, y, t_b - t_a, k1)
            stats.nfe += tab.num_stages
            stats.n_accepted += 1
            step += 1
        if _nonfinite(y):
            raise NonFiniteStateError(
                f"the state became non-finite (NaN/inf) between t={direction * t} and t={direction * t_next} "
                f"(by step {step}, method {tab.name}); try a smaller step_size, or check func for values "
                "that blow up"
            )
        ys.append(y)
        t = t_next
    return torch.stack(ys)


def solve_adaptive(f: Field, y0: torch.Tensor, times: list[float], tab: ButcherTableau, rtol: float,
                   atol: float, options: dict, norm, stats: _stats.SolveStats, direction: int = 1) -> torch.Tensor:
    """Adaptive steps under the PI controller, outputs from the dense interpolant."""
    controller = PIController(**{k: options[k] for k in ("safety", "min_factor", "max_factor", "icoeff", "pcoeff")
                                 if k in options})
    min_step = options.get("min_step") or 0.0
    max_step = options.get("max_step") or math.inf
    max_num_steps = options.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
    t, t_end = times[0], times[-1]
    span = t_end - t

    def where(tt: float) -> str:
        return f"t={direction * tt:.6g}"

    y = y0
    k1 = f(t, y)
    check_derivative(k1, y, " at the initial time")
    stats.nfe += 1
    if _nonfinite(y) or _nonfinite(k1):
        raise NonFiniteStateError(f"the initial state or its derivative is non-finite (NaN/inf) at {where(t)}")
    if len(times) == 1:
        return y0.unsqueeze(0)
    with torch.no_grad():
        if options.get("first_step") is not None:
            h = float(options["first_step"])
        else:
            h = initial_step(f, t, y, k1, tab.error_order, rtol, atol, norm)
            stats.nfe += 1
    h = min(max(h, min_step), max_step)

    ys = [y0]
    i_out = 1
    prev_err, rejected_last, nonfinite_last = 1.0, False, False
    attempts = 0
    while i_out < len(times):
        last = t + h >= t_end
        step = t_end - t if last else h
        y1, stages = rk_step(f, tab, t, y, step, k1)
        stats.nfe += tab.num_stages - 1
        with torch.no_grad():
            scale = torch.maximum(y.abs(), y1.abs()).mul_(rtol).add_(atol)
            err = float(error_estimate(tab, stages, step, scale, norm))
        attempts += 1
        finite = math.isfinite(err)
        accept = finite and (err <= 1.0 or step <= min_step)
        if accept:
            t1 = t_end if last else t + step
            f1 = stages[-1] if tab.fsal else None
            interpolant_stages = None
            while i_out < len(times) and times[i_out] <= t1:
                if times[i_out] == t1:
                    ys.append(y1)
                else:
                    if f1 is None:
                        f1 = f(t1, y1)
                        stats.nfe += 1
                    if interpolant_stages is None:
                        interpolant_stages = dense_stages(f, tab, t, y, step, stages, f1)
                        stats.nfe += len(tab.dense_stages)
                    ys.append(interpolate(tab, (times[i_out] - t) / step, step, y, y1, interpolant_stages, f1))
                i_out += 1
            stats.n_accepted += 1
            if i_out == len(times):
                stats.next_step = h  # the controller's last proposal: a warm start for a follow-on solve
                break
            if f1 is None:
                f1 = f(t1, y1)
                stats.nfe += 1
            t, y, k1 = t1, y1, f1
            factor = controller.factor(err, prev_err, tab.error_order, rejected_last)
            prev_err, rejected_last = max(err, 1e-10), False
        else:
            stats.n_rejected += 1
            factor = controller.factor(err, prev_err, tab.error_order, True) if finite else controller.min_factor
            rejected_last = True
        nonfinite_last = not finite
        h = min(max(step * factor, min_step), max_step)
        if h < 4 * _EPS * max(abs(t), span):
            if nonfinite_last:
                raise NonFiniteStateError(
                    f"the state or its derivative became non-finite (NaN/inf) at {where(t)} after "
                    f"{stats.n_accepted} accepted steps, for every step size down to {h:.3g}; check func for "
                    "values that blow up (e.g. exploding activations) or lower the learning rate"
                )
            raise StepSizeUnderflowError(
                f"step size {h:.3g} underflowed at {where(t)} after {stats.n_accepted} accepted steps "
                f"(method {tab.name}, rtol={rtol}, atol={atol}); the problem may be stiff or have a "
                "singularity here: loosen rtol/atol, set options['min_step'], or shorten the time span"
            )
        if attempts >= max_num_steps:
            raise MaxStepsExceededError(
                f"reached max_num_steps={max_num_steps} at {where(t)} of [{where(times[0])}, {where(t_end)}] "
                f"with step {h:.3g} (method {tab.name}, rtol={rtol}, atol={atol}); raise "
                "options['max_num_steps'], loosen the tolerances, or check whether the dynamics are stiff"
            )
    return torch.stack(ys)


def solve(problem: Problem, tab: ButcherTableau, rtol: float, atol: float, options: dict,
          stats: _stats.SolveStats, norm=None) -> torch.Tensor:
    """Solve a prepared problem; returns the flat solution stacked over the output times."""
    if not tab.adaptive:
        return solve_fixed(problem.field, problem.y0, problem.times, tab, options, stats, problem.direction)
    if norm is None:
        norm = make_norm(options.get("norm"), problem.sizes)
    return solve_adaptive(problem.field, problem.y0, problem.times, tab, rtol, atol, options, norm, stats,
                          problem.direction)


def check_tolerances(rtol, atol) -> tuple[float, float]:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, torch.Tensor):
            value = value.item()
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InvalidOptionError(f"{name} must be a non-negative finite number, got {value!r}")
    if rtol == 0 and atol == 0:
        raise InvalidOptionError("rtol and atol cannot both be zero")
    return float(rtol), float(atol)


def odeint(func: Callable, y0, t: torch.Tensor, *, rtol: float = 1e-7, atol: float = 1e-9,
           method: str = "dopri5", options: dict | None = None):
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return ``y`` at every ``t``.

    Gradients flow by ordinary autograd through the solver's operations (the paper's
    RK-Net); for memory that does not grow with the number of steps use ``odeint_adjoint``.
    ``y0`` may be a tensor or a tuple of tensors; the result is stacked on a new leading
    time dimension (a tuple for a tuple state). Statistics of the solve are available from
    ``last_stats()`` and ``collect_stats()``.
    """
    tab = get_tableau(method)
    options = check_options(tab, options)
    rtol, atol = check_tolerances(rtol, atol)
    problem = make_problem(func, y0, t)
    stats = _stats.SolveStats()
    track_time = t.requires_grad and torch.is_grad_enabled() and len(problem.times) > 1
    if track_time:
        # Times enter the solver as floats; give the result its exact first-order dependence on t:
        # d y(t_i) / d t_i = f(t_i, y_i) and d y(t_i) / d t_0 = -(d y(t_i) / d y0) f(t_0, y0).
        y0_value = problem.y0
        t0 = t[0]
        f0 = problem.user_field(t0.detach().to(y0_value.dtype), y0_value.detach()).detach()
        problem.y0 = y0_value - (t0 - t0.detach()).to(y0_value.dtype) * f0
        stats.nfe += 1
    ys = solve(problem, tab, rtol, atol, options, stats)
    if track_time:
        outputs = [y0_value]
        for i in range(1, len(problem.times)):
            ti = t[i]
            fi = problem.user_field(ti.detach().to(ys.dtype), ys[i].detach()).detach()
            outputs.append(ys[i] + (ti - ti.detach()).to(ys.dtype) * fi)
        stats.nfe += len(problem.times) - 1
        ys = torch.stack(outputs)
    _stats.record(stats)
    return problem.unpack(ys)
