"""The one integration loop. Solver, controller and interpolant are objects it is handed; events,
callbacks and a per-step hook (the checkpointed gradient records steps through it) are its hooks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from neuralode.ode.errors import MaxStepsExceededError, NonFiniteStateError, stalled_solve_error, time_limit_error
from neuralode.ode.problem import DEFAULT_MAX_NUM_STEPS, Problem, check_start
from neuralode.ode.solvers.runge_kutta import HermiteInterpolant, LinearInterpolant
from neuralode.ode.stats import SolveStats

EVENT_BISECTIONS = 52  # halvings of the step that holds an event: down to float64 resolution


@dataclass
class AcceptedStep:
    """What replaying an accepted step needs (``checkpoint.py``)."""

    t: float
    t1: float
    perturb_start: int  # the step's first slope is a right-hand limit (after a jump or on a perturbed grid)
    perturb_end: bool
    outputs: list[tuple[int, float]] = field(default_factory=list)  # (index in ys, solver time) inside (t, t1]


@dataclass
class Solution:
    ys: list[torch.Tensor]
    event_t: float | None = None  # solver time of the event, when one was searched for


def _nonfinite(y: torch.Tensor) -> bool:
    return not bool(torch.isfinite(y).all())


def integrate(problem: Problem, solver, controller, stats: SolveStats, *, interp: str = "linear",
              perturb: bool = False, event_fn: Callable | None = None,
              max_num_steps: int = DEFAULT_MAX_NUM_STEPS, max_seconds: float | None = None,
              on_accept: Callable[[AcceptedStep, torch.Tensor, torch.Tensor], None] | None = None) -> Solution:
    """Solve ``problem`` from its first time to its last (or to the event), returning the state at
    every output time. ``interp`` picks fixed-step outputs between grid points: "linear" or
    "cubic"; adaptive solvers use their own dense output. ``perturb`` evaluates a fixed step's
    first slope just after its start and its last stage just before its end.
    ``event_fn(s, y)`` (in solver time) ends the solve where its sign changes. ``max_seconds``
    (None: no limit) stops a solve that runs longer with :class:`TimeLimitError`.
    """
    f, times, callbacks = problem.field, problem.times, problem.callbacks
    method = solver.name
    t, y = times[0], problem.y0
    start = 1 if perturb else 0
    f0 = solver.init(f, t, y, start)
    slope0 = solver.slope_of(f0)  # a multistep solver carries a history: its newest slope
    check_start(y, slope0, problem.user_time(t))
    ys = [y]
    if event_fn is not None:
        with torch.no_grad():
            sign0 = torch.sign(event_fn(t, y))
        if sign0 == 0:
            return Solution([y, y], t)
        t_end = math.inf
    elif len(times) == 1:
        return Solution(ys)
    else:
        t_end = times[-1]
    span = abs(t_end - t) if math.isfinite(t_end) else abs(t) + 1.0
    h = controller.initial_step(f, t, y, slope0, solver.error_order)

    def where(s: float) -> str:
        return f"t={problem.user_time(s):.6g}"

    i_out, attempts = 1, 0
    # Fixed steps have no error estimate to catch a blow-up. Reading a device value at each step
    # (or output) would make the host wait for the device each time, so whether every state with
    # an output is finite is gathered on the device and read once, at the end.
    finite = None
    output_steps = [0]  # accepted steps by each output: for the error message only
    deadline = time.monotonic() + max_seconds if max_seconds else None
    try:
        while True:
            t1, jump = controller.next_time(t, h, t_end)
            step_size = t1 - t
            if "callback_step" in callbacks:
                callbacks["callback_step"](t, y, step_size)
            step = solver.step(f, t, y, step_size, f0, perturb_end=jump or perturb)
            accept, h_next, ratio = controller.adapt(solver, step, t, step_size, y)
            attempts += 1
            if not accept:
                stats.n_rejected += 1
                if "callback_reject_step" in callbacks:
                    callbacks["callback_reject_step"](t, y, step_size)
                if controller.underflow(t, h_next, span):
                    raise stalled_solve_error(where(t), stats.n_accepted, h_next, method, not math.isfinite(ratio))
            else:
                stats.n_accepted += 1
                order = solver.order_taken(step)
                if order:  # a variable-order method
                    stats.orders.append(order)
                if "callback_accept_step" in callbacks:
                    callbacks["callback_accept_step"](t, y, step_size)
                y1 = step.y1
                if not controller.adaptive and event_fn is not None and _nonfinite(y1):  # the event reads anyway
                    raise NonFiniteStateError(
                        f"the state became non-finite (NaN/inf) between {where(t)} and {where(t1)} (by step "
                        f"{stats.n_accepted}, method {method}); try a smaller {solver.step_size_option}, or check func "
                        "for values that blow up")
                record = AcceptedStep(t, t1, start, jump or perturb)
                interpolant = None

                def interpolate(s: float | list[float]):
                    nonlocal interpolant
                    if interpolant is None:
                        interpolant = step_interpolant(solver, controller.adaptive, interp, f, t, step_size, y, step)
                    return interpolant.at(s) if isinstance(s, list) else interpolant(s)

                done = False
                if event_fn is not None:
                    with torch.no_grad():
                        changed = torch.sign(event_fn(t1, y1)) != sign0
                    if changed:
                        t_event = find_event(interpolate, event_fn, sign0, t, t1)
                        if torch.is_grad_enabled():
                            interpolant = None  # the search built it without a graph
                        ys.append(y1 if t_event == t1 else interpolate(t_event))
                        record.outputs.append((1, t_event))
                        done = True
                else:
                    inside = []
                    while i_out < len(times) and times[i_out] <= t1:
                        inside.append((i_out, times[i_out]))
                        i_out += 1
                    if inside:  # all of this step's outputs in one product
                        ys.extend(outputs_at(interpolate, [s for _, s in inside], t1, y1))
                        record.outputs.extend(inside)
                        output_steps.extend([stats.n_accepted] * len(inside))
                        if not controller.adaptive:
                            ok = torch.isfinite(y1).all()
                            finite = ok if finite is None else finite & ok
                    done = i_out == len(times)
                if done:
                    if finite is not None and not bool(finite):
                        raise _nonfinite_outputs(ys, output_steps, problem, solver)
                    stats.next_step = h_next  # the controller's proposal: a warm start for a follow-on solve
                    solver.count_into(stats)  # implicit methods count Jacobians and LU factorisations
                    if on_accept is not None:
                        on_accept(record, y1, None)
                    return Solution(ys, t_event if event_fn is not None else None)
                start = 1 if (jump or perturb) else 0
                f0 = solver.next_init(f, t1, step, start)
                if on_accept is not None:
                    on_accept(record, y1, f0)
                t, y = t1, y1
            h = h_next
            if deadline is not None and time.monotonic() > deadline:
                raise time_limit_error(max_seconds, where(t), stats.n_accepted, method)
            if attempts >= max_num_steps and (controller.adaptive or event_fn is not None):
                raise MaxStepsExceededError(
                    f"reached max_num_steps={max_num_steps} at {where(t)} of [{where(times[0])}, "
                    f"{where(t_end) if math.isfinite(t_end) else 'the event'}] with step {h:.3g} (method {method}); "
                    "raise options['max_num_steps'], loosen the tolerances, or check whether the dynamics are stiff")
    except KeyboardInterrupt as stop:  # Ctrl-C (or SIGTERM in the trainer): say where the solve was
        stop.add_note(f"interrupted inside an ODE solve at {where(t)} of [{where(times[0])}, "
                      f"{where(t_end) if math.isfinite(t_end) else 'the event'}], after {stats.n_accepted} accepted "
                      f"steps of {method} (step {h:.3g})")
        raise


def _nonfinite_outputs(ys: list[torch.Tensor], output_steps: list[int], problem: Problem,
                       solver) -> NonFiniteStateError:
    """The error for a fixed-step solve whose outputs hold NaN/inf, naming the first such output."""
    bad = next(i for i, y in enumerate(ys) if _nonfinite(y))
    before, at = (problem.user_time(problem.times[j]) for j in (bad - 1, bad))
    return NonFiniteStateError(
        f"the state became non-finite (NaN/inf) between t={before:.6g} and t={at:.6g} (by step "
        f"{output_steps[bad]}, method {solver.name}); try a smaller {solver.step_size_option}, or check func for "
        "values that blow up")


def outputs_at(interpolate: Callable, times: list[float], t1: float, y1: torch.Tensor) -> list[torch.Tensor]:
    """The states at ``times`` inside a step that ends at ``t1`` (exactly ``y1`` there), the
    interpolant asked only when some time falls strictly inside."""
    if all(s == t1 for s in times):
        return [y1] * len(times)
    return interpolate(times)


def step_interpolant(solver, adaptive: bool, interp: str, f, t: float, h: float, y0: torch.Tensor, step):
    """The state inside an accepted step: the solver's dense output when adaptive, else ``interp``."""
    if adaptive:
        return solver.interpolant(f, t, h, y0, step, None)
    if interp == "linear":
        return LinearInterpolant(t, h, y0, step.y1)
    # "cubic": Hermite through both ends and their slopes
    return HermiteInterpolant(t, h, y0, step.y1, step.stages[0], f(t + h, step.y1, -1))


def find_event(interpolate: Callable[[float], torch.Tensor], event_fn: Callable, sign0: torch.Tensor,
               t0: float, t1: float) -> float:
    """Bisection on the step's interpolant for where ``event_fn`` changes sign from ``sign0``."""
    with torch.no_grad():
        for _ in range(EVENT_BISECTIONS):
            mid = 0.5 * (t0 + t1)
            if mid in (t0, t1):
                break
            if torch.sign(event_fn(mid, interpolate(mid))) == sign0:
                t0 = mid
            else:
                t1 = mid
    return t1
