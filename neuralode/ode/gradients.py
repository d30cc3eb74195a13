"""Gradient strategies: how gradients reach ``y0``, ``t`` and the parameters of a solve. Each is
an object of the registry ``GRADIENTS`` (``odeint``'s ``gradient=`` names one) that wraps the
same loop: ``direct`` differentiates the loop's own operations (the paper's RK-Net),
``checkpoint`` replays steps from stored states (``checkpoint.py``), ``adjoint`` solves the
adjoint ODE backward (``adjoint.py``, Algorithm 1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neuralode.ode import stats as _stats
from neuralode.ode.adjoint import solve_adjoint
from neuralode.ode.checkpoint import solve_checkpointed
from neuralode.ode.errors import AdjointParamsError
from neuralode.ode.problem import Problem
from neuralode.ode.setup import AdjointSettings, Setup, make_adjoint_setup


def default_params(func, adjoint_params, gradient: str) -> tuple[torch.Tensor, ...]:
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise AdjointParamsError(
                f"gradient={gradient!r} cannot find the parameters to differentiate: func is not an nn.Module. "
                "Pass adjoint_params=(tensors...) (or adjoint_params=() if there are none)")
        adjoint_params = tuple(func.parameters())
    adjoint_params = tuple(adjoint_params)
    for i, p in enumerate(adjoint_params):
        if not isinstance(p, torch.Tensor):
            raise AdjointParamsError(f"adjoint_params[{i}] is a {type(p).__name__}, not a tensor; pass the tensors to "
                                     "differentiate, e.g. tuple(model.parameters())")
    return tuple(p for p in adjoint_params if p.requires_grad)


class GradientStrategy:
    """One way to differentiate a solve. ``solve`` returns the stacked outputs (and the event's
    solver time, None without an event) with the strategy's gradient attached."""

    name: str
    #: Differentiates the solver's own operations, so a method without them (scipy_solver) cannot serve.
    through_solver = True

    def solve(self, problem: Problem, setup: Setup, t: torch.Tensor, event, func, adjoint_params,
              adjoint: AdjointSettings) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError


class Direct(GradientStrategy):
    """Autograd through the loop's operations."""

    name = "direct"

    def solve(self, problem, setup, t, event, func, adjoint_params, adjoint):
        def run():
            stats = _stats.SolveStats()
            solution = setup.integrate(problem, stats, t, event)
            stats.nfe = problem.nfe
            _stats.record(stats)
            return torch.stack(solution.ys), solution.event_t

        return with_time_dependence(problem, t, event, run)


class Checkpoint(GradientStrategy):
    """The exact gradient of the discrete solve, replaying steps from about sqrt(2N) stored states."""

    name = "checkpoint"

    def solve(self, problem, setup, t, event, func, adjoint_params, adjoint):
        params = default_params(func, adjoint_params, self.name)
        return with_time_dependence(problem, t, event, lambda: solve_checkpointed(problem, setup, t, event, params))


class Adjoint(GradientStrategy):
    """The adjoint method (Algorithm 1): the backward pass solves [z, a, a_theta] backward."""

    name = "adjoint"
    through_solver = False

    def solve(self, problem, setup, t, event, func, adjoint_params, adjoint):
        params = default_params(func, adjoint_params, self.name)
        adjoint_setup = make_adjoint_setup(setup, problem, adjoint)
        return solve_adjoint(problem, setup, adjoint_setup, func, t, event, params)


#: ``odeint``'s ``gradient=`` names, each with its strategy.
GRADIENTS: dict[str, GradientStrategy] = {s.name: s for s in (Direct(), Adjoint(), Checkpoint())}


def with_time_dependence(problem: Problem, t: torch.Tensor, event, run):
    """``run()``'s outputs with their first-order dependence on ``t`` added (times enter the solver
    as floats): d y(t_i) / d t_i = f(t_i, y_i) and d y(t_i) / d t_0 = -(d y(t_i) / d y0) f(t_0, y0)."""
    times = problem.times
    if not (t.requires_grad and torch.is_grad_enabled() and len(times) > 1):
        return run()
    y0_value, t0 = problem.y0, t[0]
    f0 = problem.user_field(t0.detach().to(y0_value.dtype), y0_value.detach()).detach()
    problem.y0 = y0_value - (t0 - t0.detach()).to(y0_value.dtype) * f0
    ys, event_s = run()
    outputs = [y0_value]
    if event is None:
        for i in range(1, len(times)):
            ti = t[i]
            fi = problem.user_field(ti.detach().to(ys.dtype), ys[i].detach()).detach()
            outputs.append(ys[i] + (ti - ti.detach()).to(ys.dtype) * fi)
    else:
        outputs.append(ys[1])
    return torch.stack(outputs), event_s
