"""``odeint`` and ``odeint_adjoint``: check the arguments (``setup.py``), then hand the solve to
the gradient strategy named (``gradients.py``: direct, adjoint, checkpoint).
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from neuralode.ode.errors import InvalidOptionError
from neuralode.ode.gradients import GRADIENTS
from neuralode.ode.problem import Problem, attach_callbacks, make_problem
from neuralode.ode.setup import AdjointSettings, check_gradient_arguments, check_state_precision, make_setup


def solver_event_fn(event_fn: Callable, problem: Problem) -> Callable:
    """``event_fn(t, y)`` in solver terms; a vector of events is reduced to one scalar that
    changes sign when the first of them does (each is made positive at the start)."""
    def scalar(s, y):
        t = torch.tensor(problem.user_time(s), dtype=y.dtype, device=y.device)
        value = event_fn(t, problem.user_state(y))
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            got = f"a tensor of {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise InvalidOptionError(f"event_fn(t, y) must return a floating-point tensor (one value, or one per "
                                     f"event) whose sign change ends the solve, got {got}; e.g. return y[0] - 1, "
                                     "not a comparison such as y[0] > 1")
        return value

    with torch.no_grad():
        signs = torch.sign(scalar(problem.times[0], problem.y0).detach())
    if signs.numel() == 1:
        return lambda s, y: scalar(s, y).reshape(())
    return lambda s, y: (scalar(s, y) * signs).min()


def odeint(func: Callable, y0, t: torch.Tensor, *, rtol=1e-7, atol=1e-9, method: str | None = None,
           options: dict | None = None, event_fn: Callable | None = None, gradient: str | None = None,
           adjoint_params: Sequence[torch.Tensor] | None = None, adjoint_rtol=None, adjoint_atol=None,
           adjoint_method: str | None = None, adjoint_options: dict | None = None):
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return ``y`` at every ``t``.

    ``y0`` is a tensor or a tuple of tensors; the result is stacked on a new leading time
    dimension (a tuple for a tuple state). ``method=None`` is dopri5. With ``event_fn(t, y)``
    the solve runs from ``t[0]`` in the direction of ``t[1]`` until ``event_fn`` changes sign
    and returns ``(event_t, solution at [t[0], event_t])``.

    ``gradient`` says how gradients reach ``y0``, ``t`` and the parameters:
      - "direct" (the default, None): autograd through the solver's operations (the paper's
        RK-Net). A method without a gradient through its steps (``scipy_solver``) returns
        constants under the default, with a warning, as torchdiffeq does; asked for "direct" by
        name, it refuses;
      - "adjoint": the adjoint method, Algorithm 1 (``odeint_adjoint``; ``adjoint_*`` apply);
      - "checkpoint": the exact gradient of the discrete solve, recomputing steps from
        checkpoints, with memory growing like the square root of the number of steps
        (``options["checkpoint_every"]`` fixes the steps between checkpoints instead).
    The last two differentiate ``adjoint_params`` (default: the parameters of ``func``, an
    ``nn.Module``). Statistics: ``last_stats()`` and ``collect_stats()``.
    """
    named, gradient = gradient is not None, gradient or "direct"
    strategy = GRADIENTS.get(gradient) if isinstance(gradient, str) else None
    if strategy is None:
        raise InvalidOptionError(f"gradient={gradient!r} is not a gradient strategy; choose one of "
                                 f"{', '.join(GRADIENTS)}")
    adjoint = AdjointSettings(adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options)
    problem = make_problem(func, y0, t)
    setup = make_setup(method, rtol, atol, options, problem.shapes)
    check_state_precision(setup, problem.y0)
    check_gradient_arguments(gradient, setup.options, adjoint, method)
    if strategy.through_solver and not setup.solver.differentiable and torch.is_grad_enabled():
        _refuse_gradient_through(setup.solver.name, problem, t, func, adjoint_params, gradient, named)
    event = None
    if event_fn is not None:
        if len(problem.times) != 2:
            raise InvalidOptionError(f"with event_fn, t must hold 2 times (the start, and any later time for the "
                                     f"direction), got {len(problem.times)}")
        event = solver_event_fn(event_fn, problem)
    attach_callbacks(problem, func, supported=() if setup.batched else setup.solver.callbacks,
                     method=setup.solver.name)

    ys, event_s = strategy.solve(problem, setup, t, event, func, adjoint_params, adjoint)
    solution = problem.unpack(ys)
    if event_fn is None:
        return solution
    event_t = torch.tensor(problem.user_time(event_s), dtype=t.dtype, device=t.device)
    return event_t, solution


def _refuse_gradient_through(method, problem, t, func, adjoint_params, gradient, named: bool) -> None:
    """A method with no gradient through its steps, where its inputs want one: refuse a gradient
    strategy asked for by name; under the default, warn (torchdiffeq returns the solution as
    constants, and code written for it must keep running)."""
    params = adjoint_params if adjoint_params is not None else (func.parameters() if isinstance(func, nn.Module) else ())
    if not (problem.y0.requires_grad or t.requires_grad or any(p.requires_grad for p in params)):
        return
    if named:
        raise InvalidOptionError(
            f"method={method!r} passes no gradient through the solver, so gradient={gradient!r} cannot "
            "differentiate it; use gradient='adjoint' (its backward solve may use this method or another: "
            "adjoint_method=...), or solve under torch.no_grad()")
    warnings.warn(f"method={method!r} passes no gradient through the solver: its solution is constant to "
                  "autograd (as in torchdiffeq); for gradients use gradient='adjoint', or solve under "
                  "torch.no_grad() to silence this", stacklevel=3)


def odeint_adjoint(func: Callable, y0, t: torch.Tensor, *, rtol=1e-7, atol=1e-9, method: str | None = None,
                   options: dict | None = None, event_fn: Callable | None = None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method: str | None = None,
                   adjoint_options: dict | None = None, adjoint_params: Sequence[torch.Tensor] | None = None):
    """``odeint(..., gradient="adjoint")``: the backward pass solves the adjoint ODE instead of
    storing the graph, so memory does not grow with the number of steps.

    Gradients reach ``y0``, every entry of ``t`` and ``adjoint_params`` (by default the
    parameters of ``func``, which must then be an ``nn.Module``). The backward solve uses the
    forward's method, tolerances and options unless the ``adjoint_*`` arguments say otherwise;
    ``adjoint_options={"norm": "seminorm"}`` leaves the parameter adjoint out of step control.
    """
    return odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn,
                  gradient="adjoint", adjoint_params=adjoint_params, adjoint_rtol=adjoint_rtol,
                  adjoint_atol=adjoint_atol, adjoint_method=adjoint_method, adjoint_options=adjoint_options)
