"""A user's problem in the solver's terms: input checks, tuple states, the direction of time,
perturbed evaluation at discontinuities, tolerances, norms and callbacks.

Time is kept in Python floats (float64) inside the solver; ``func`` receives it as a 0-dim tensor
of the state's dtype and device, which is what a float32 model expects to concatenate with its
input. A decreasing ``t`` is solved as an increasing one in ``s = -t``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from neuralode.ode.errors import InvalidOptionError, InvalidTimeError, NonFiniteStateError, StateMismatchError

#: The solver's view of the vector field: float solver time, tensor state, and ``perturb``: +1
#: evaluates just after ``s`` (the right-hand limit in the direction of integration), -1 just
#: before, 0 at ``s``. Each call is counted in the solve's statistics.
Field = Callable[..., torch.Tensor]

CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")

#: Attempted steps after which an adaptive solve (or an event search) stops with
#: MaxStepsExceededError: a guard against a solve that would never end, set high enough not to
#: refuse one that does (torchdiffeq has no limit; adaptive_heun in float32 at the default
#: tolerances needs 36,000 steps on a linear 2-D rotation over [1, 8]). Both loops read it.
DEFAULT_MAX_NUM_STEPS = 1_000_000


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


def check_start(y: torch.Tensor, dy: Any, user_time: float) -> None:
    """A solve's first state and derivative: a tensor like ``y``, and finite (one read of the
    device for both); ``user_time`` is where, in the user's time, for the message."""
    check_derivative(dy, y, " at the initial time")
    if not bool(torch.isfinite(y).all() & torch.isfinite(dy).all()):
        raise NonFiniteStateError(f"the initial state or its derivative is non-finite (NaN/inf) at t={user_time:.6g}")


def flatten_state(y0) -> tuple[torch.Tensor, list[int] | None, list[torch.Size] | None]:
    if isinstance(y0, torch.Tensor):
        if not torch.is_floating_point(y0):
            raise StateMismatchError(f"y0 must be a floating-point tensor, got dtype {y0.dtype}")
        if y0.numel() == 0:
            raise StateMismatchError(f"y0 has no elements (shape {tuple(y0.shape)}): there is nothing to solve")
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


@dataclass
class Problem:
    """One state tensor, increasing float times, and ``func`` wrapped to match."""

    user_field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # f(t, y) in user time, flat state
    y0: torch.Tensor
    times: list[float]  # increasing solver times (s = direction * t)
    direction: int
    sizes: list[int] | None  # component sizes of a flattened tuple state
    shapes: list[torch.Size] | None
    nfe: int = 0  # evaluations of func through ``field``
    callbacks: dict[str, Callable] = field(default_factory=dict)  # in solver terms: (s, y, ds)
    event_s: float | None = None  # where an event ended the solve (solver time)
    # d user_field / dy as an (n, n) matrix, (t, y) -> J, where one is known exactly (the adjoint's
    # augmented field, which torch.func cannot transform); implicit methods use it over their own.
    user_jacobian: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def field(self, s: float, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        self.nfe += 1
        t = torch.full((), self.direction * s, dtype=y.dtype, device=y.device)
        if perturb:  # the next float after (or before) t, in the direction of integration
            t = torch.nextafter(t, t + self.direction * perturb)
        dy = self.user_field(t, y)
        return dy if self.direction > 0 else -dy

    def jacobian(self, s: float, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        """``d field / dy`` at ``(s, y)`` from ``user_jacobian`` (one evaluation of func counted)."""
        self.nfe += 1
        t = torch.full((), self.direction * s, dtype=y.dtype, device=y.device)
        if perturb:
            t = torch.nextafter(t, t + self.direction * perturb)
        J = self.user_jacobian(t, y)
        return J if self.direction > 0 else -J

    def unpack(self, ys: torch.Tensor):
        """Solutions stacked over time, back in the user's structure."""
        if self.shapes is None:
            return ys
        parts = ys.split(self.sizes, dim=1)
        return tuple(p.reshape(ys.shape[0], *shape) for p, shape in zip(parts, self.shapes))

    def user_state(self, y: torch.Tensor):
        if self.shapes is None:
            return y
        return tuple(p.view(s) for p, s in zip(y.split(self.sizes), self.shapes))

    def user_time(self, s: float) -> float:
        return self.direction * s


def make_problem(func: Callable, y0, t: torch.Tensor) -> Problem:
    times, direction = check_times(t)
    flat_y0, sizes, shapes = flatten_state(y0)

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

    if torch.is_autocast_enabled(flat_y0.device.type):
        user_field = _state_dtype(user_field)
    return Problem(user_field, flat_y0, [direction * x for x in times], direction, sizes, shapes)


def _state_dtype(user_field: Callable) -> Callable:
    """Under ``torch.autocast`` func's layers compute in half precision: their result is cast to
    the state's dtype, so the solver (and its error control) keeps the precision of ``y0``."""
    def field(tt, y):
        dy = user_field(tt, y)
        return dy.to(y.dtype) if isinstance(dy, torch.Tensor) and dy.is_floating_point() else dy

    return field


def attach_callbacks(problem: Problem, func: Any, names: Sequence[str] = CALLBACKS,
                     supported: Sequence[str] = CALLBACKS, method: str = "") -> None:
    """Call ``func``'s step callbacks (torchdiffeq's names) with user time and structure.

    ``names[i]`` on ``func`` is attached as ``CALLBACKS[i]`` (the adjoint's backward solve
    passes the ``*_adjoint`` names); those the method cannot call get a warning.
    """
    for name, slot in zip(names, CALLBACKS):
        callback = getattr(func, name, None)
        if callback is None:
            continue
        if slot not in supported:
            warnings.warn(f"method {method!r} does not call {name}; it will not be called", stacklevel=4)
            continue

        def call(s, y, ds, _callback=callback):
            t = torch.tensor(problem.user_time(s), dtype=y.dtype, device=y.device)
            return _callback(t, problem.user_state(y), torch.tensor(ds, dtype=y.dtype, device=y.device))

        problem.callbacks[slot] = call


# --------------------------------------------------------------------------- tolerances and norms
def check_tolerances(rtol, atol, shapes: Sequence[torch.Size] | None = None, prefix: str = "") -> tuple:
    """Tolerances as floats, or as tensors (per element, or per component of a tuple state)."""
    def check_one(name, value):
        values = value.detach().reshape(-1).tolist() if isinstance(value, torch.Tensor) else [value]
        for v in values:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise InvalidOptionError(f"{prefix}{name} must be a non-negative finite number, got {value!r}")
        return value if isinstance(value, torch.Tensor) and value.numel() > 1 else float(values[0])

    result = []
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, (tuple, list)):
            if shapes is None or len(value) != len(shapes):
                n = "a tensor state" if shapes is None else f"a tuple state of {len(shapes)} tensors"
                raise InvalidOptionError(f"{prefix}{name} is a sequence of {len(value)} values, but y0 is {n}; "
                                         "give one tolerance per tensor of a tuple state, or a number")
            result.append(tuple(check_one(name, v) for v in value))
        else:
            result.append(check_one(name, value))
    if _all_zero(result[0]) and _all_zero(result[1]):
        raise InvalidOptionError(f"{prefix}rtol and {prefix}atol cannot both be zero")
    return tuple(result)


def _all_zero(tol) -> bool:
    if isinstance(tol, tuple):
        return all(_all_zero(x) for x in tol)
    if isinstance(tol, torch.Tensor):
        return bool((tol == 0).all())
    return tol == 0


def flat_tolerance(tol, problem: Problem, like: torch.Tensor, name: str = "tolerance"):
    """A tolerance (``name``: rtol or atol) in the flat state's layout: a float; a tensor that
    broadcasts to the state's shape (for a tuple state: to the flat state); or one per tensor
    of a tuple state."""
    if not isinstance(tol, (tuple, torch.Tensor)):
        return tol
    if isinstance(tol, torch.Tensor) and problem.shapes is not None:
        parts, shapes = (tol,), [like.shape]
    else:
        parts, shapes = (tol if isinstance(tol, tuple) else (tol,)), (problem.shapes or [like.shape])
    flat = []
    for i, (v, shape) in enumerate(zip(parts, shapes)):
        v = torch.as_tensor(v).to(device=like.device, dtype=like.dtype)
        try:
            flat.append(v.expand(shape).reshape(-1))
        except RuntimeError:
            which = f" (state component {i})" if isinstance(tol, tuple) else ""
            raise InvalidOptionError(f"{name} has shape {tuple(v.shape)}, which does not broadcast to the state's "
                                     f"shape {tuple(shape)}{which}; give a number, or a tensor of that shape") from None
    return torch.cat(flat) if len(flat) > 1 else flat[0]


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean().sqrt()


class ComponentRMSNorm:
    """Largest RMS over the parts of a flattened tuple state.

    A small component (a 1-element log-density, say) is not drowned by a large one. With
    ``include`` set, only those parts count: that is the adjoint's seminorm, which leaves the
    parameter-adjoint channels out of step control (Kidger, Chen and Lyons 2021).
    """

    def __init__(self, sizes: Sequence[int], include: Sequence[int] | None = None):
        self.sizes = list(sizes)
        self.include = list(range(len(sizes))) if include is None else list(include)
        self._segments: dict[torch.device, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def _segment_ids(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
        if device not in self._segments:
            offsets = [0]
            for size in self.sizes:
                offsets.append(offsets[-1] + size)
            end = offsets[max(self.include) + 1]  # elements past the last included part are ignored
            ids = torch.full((end,), len(self.include), dtype=torch.long)  # slot for excluded parts
            counts = torch.zeros(len(self.include) + 1)
            for slot, part in enumerate(self.include):
                ids[offsets[part]:offsets[part + 1]] = slot
                counts[slot] = max(self.sizes[part], 1)
            self._segments[device] = (ids.to(device), counts.to(device), end)
        return self._segments[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.sizes) == 1:
            return rms_norm(x)
        ids, counts, end = self._segment_ids(x.device)
        x = x.reshape(-1)
        sq = torch.zeros(len(counts), dtype=x.dtype, device=x.device).index_add_(0, ids, x[:end].pow(2))
        return (sq[:-1] / counts[:-1].to(x.dtype)).max().sqrt()


def make_norm(option, problem: Problem):
    """The error norm: the user's (given the state in their structure, as torchdiffeq does), or
    RMS for a tensor state and the largest component RMS for a tuple state."""
    if callable(option):
        if problem.shapes is None:
            return option
        return lambda x: option(problem.user_state(x))
    return rms_norm if problem.sizes is None else ComponentRMSNorm(problem.sizes)
