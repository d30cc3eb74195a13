"""Solving until an event, with gradients through the event time.

The event time ``t*`` solves ``g(t*, y(t*)) = 0``. By the implicit function theorem a change of
the state at a fixed time moves it by ``dt* = -(dg/dy . dy) / (dg/dt + dg/dy . f)``, so a loss
``L(t*, y(t*))`` passes ``dL/dy + (dL/dt* + dL/dy . f) dt*/dy`` back to the solution at fixed time;
the solver's own gradient strategy (direct, adjoint or checkpoint) takes it from there.
"""

from __future__ import annotations

from typing import Callable

import torch

from neuralode.ode.api import odeint
from neuralode.ode.problem import make_problem


def odeint_event(func: Callable, y0, t0: torch.Tensor, *, event_fn: Callable, reverse_time: bool = False,
                 odeint_interface: Callable = odeint, **kwargs):
    """Solve from ``t0`` (forward, or backward with ``reverse_time``) until ``event_fn(t, y)``
    changes sign; return ``(event_t, solution)`` with ``solution`` the state at ``[t0, event_t]``.

    ``event_t`` and the final state are differentiable with respect to ``y0`` and the
    parameters that the chosen ``odeint_interface`` differentiates (not ``event_fn``'s own).
    """
    t0 = torch.as_tensor(t0).reshape(-1)[:1]
    t = torch.cat([t0, t0.detach() + (-1.0 if reverse_time else 1.0)])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)

    problem = make_problem(func, y0, t)  # the flat state and field, as the solver sees them
    state_t = solution[-1] if problem.shapes is None else torch.cat([s[-1].reshape(-1) for s in solution])
    event_t, state_t = _ImplicitEventGradient.apply(problem.user_field, event_fn, problem.user_state, event_t, state_t)
    if problem.shapes is None:
        return event_t, torch.cat([solution[:-1], state_t[None]])
    return event_t, tuple(torch.cat([s[:-1], p[None]]) for s, p in zip(solution, problem.user_state(state_t)))


class _ImplicitEventGradient(torch.autograd.Function):
    """Identity forward; backward reroutes the event time's gradient onto the state."""

    @staticmethod
    def forward(ctx, field, event_fn, as_user, event_t, state_t):
        ctx.field, ctx.event_fn, ctx.as_user = field, event_fn, as_user
        ctx.save_for_backward(event_t, state_t)
        return event_t.detach().clone(), state_t.detach().clone()

    @staticmethod
    def backward(ctx, grad_t, grad_state):
        event_t, state_t = ctx.saved_tensors
        with torch.enable_grad():
            t = event_t.detach().clone().requires_grad_(True)
            y = state_t.detach().clone().requires_grad_(True)
            f = ctx.field(t.to(y.dtype), y).detach()
            g = _scalar_event(ctx.event_fn(t.to(y.dtype), ctx.as_user(y)))
            dg_dt, dg_dy = torch.autograd.grad(g, (t, y), allow_unused=True)
        dg_dt = torch.zeros_like(t) if dg_dt is None else dg_dt
        dg_dy = torch.zeros_like(y) if dg_dy is None else dg_dy
        grad_t = torch.zeros_like(t) if grad_t is None else grad_t
        grad_state = torch.zeros_like(y) if grad_state is None else grad_state
        dg_total = dg_dt + (dg_dy * f).sum()
        # dL/dt* in full: directly, and through the state moving with time along f.
        dl_dt = grad_t + (grad_state * f).sum()
        grad_state = grad_state - (dl_dt / dg_total).to(y.dtype) * dg_dy
        return None, None, None, None, grad_state


def _scalar_event(value: torch.Tensor) -> torch.Tensor:
    """A vector of events: the one that fired is the one nearest zero."""
    return value.reshape(()) if value.numel() == 1 else value.reshape(-1)[value.detach().abs().argmin()]
