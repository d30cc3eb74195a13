"""The adjoint method (Chen et al. 2018, Algorithm 1) as an autograd.Function.

The forward solve stores only the solution at the output times. The backward pass
integrates the augmented state ``[z, a, a_theta]`` from the last output time to the first,

    dz/dt = f(t, z),   da/dt = -a df/dz,   da_theta/dt = -a df/dtheta,

restarting ``z`` from the stored solution and adding ``dL/dy(t_i)`` to ``a`` at each output
time, so memory does not grow with the number of steps. Gradients with respect to the
output times come for free: ``dL/dt_i = dL/dy_i . f(t_i, y_i)`` and
``dL/dt_0 = -a(t_0) . f(t_0, y_0)`` (without ``dL/dy_0``, since ``y(t_0) = y0``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from neuralode.ode import stats as _stats
from neuralode.ode.controller import ComponentRMSNorm
from neuralode.ode.errors import AdjointParamsError, InvalidOptionError
from neuralode.ode.solve import Problem, check_options, check_tolerances, get_tableau, make_norm, make_problem, solve


class _AdjointSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Problem, settings: dict, t: torch.Tensor, y0: torch.Tensor, *params: torch.Tensor):
        stats = _stats.SolveStats()
        problem.y0 = y0
        with torch.no_grad():
            ys = solve(problem, settings["tab"], settings["rtol"], settings["atol"], settings["options"], stats)
        _stats.record(stats)
        ctx.problem, ctx.settings = problem, settings
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        t, ys, *params = ctx.saved_tensors
        problem, settings = ctx.problem, ctx.settings
        user_field = problem.user_field
        n_params = [p.numel() for p in params]
        state_size = ys.shape[1:].numel()
        dtype, device = ys.dtype, ys.device
        stats = _stats.SolveStats()

        def augmented(tt: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
            z, a = aug[:state_size].view(ys.shape[1:]), aug[state_size:2 * state_size].view(ys.shape[1:])
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                dz = user_field(tt, z)
                vjps = torch.autograd.grad(dz, (z, *params), -a, allow_unused=True)
            parts = [dz.detach(), *vjps]
            like = [z, z, *params]
            return torch.cat([(p if p is not None else torch.zeros_like(q)).reshape(-1) for p, q in zip(parts, like)])

        times = t.detach().to("cpu", torch.float64)
        t_grad = torch.zeros_like(t) if ctx.needs_input_grad[2] else None

        def f_at(i: int) -> torch.Tensor:
            stats.nfe += 1
            return user_field(torch.full((), times[i].item(), dtype=dtype, device=device), ys[i])

        sizes = [state_size, state_size, *n_params]
        norm_option = settings["adjoint_options"].get("norm")
        if norm_option == "seminorm":
            norm = ComponentRMSNorm(sizes, include=[0, 1])
        else:
            norm = make_norm(norm_option, sizes)
        options = {k: v for k, v in settings["adjoint_options"].items() if k != "norm"}

        a = grad_ys[-1].reshape(-1)
        a_params = torch.zeros(sum(n_params), dtype=dtype, device=device)
        with torch.no_grad():
            for i in range(len(times) - 1, 0, -1):
                if t_grad is not None:
                    t_grad[i] = (grad_ys[i] * f_at(i)).sum()
                aug0 = torch.cat([ys[i].reshape(-1), a, a_params])
                segment = make_problem(augmented, aug0, times[[i, i - 1]])
                if settings["adjoint_tab"].adaptive and stats.next_step and "first_step" not in options:
                    # Start where the previous segment's controller left off, not from a fresh guess.
                    options_i = {**options, "first_step": stats.next_step}
                else:
                    options_i = options
                aug = solve(segment, settings["adjoint_tab"], settings["adjoint_rtol"], settings["adjoint_atol"],
                            options_i, stats, norm=norm)[-1]
                a = aug[state_size:2 * state_size]
                a_params = aug[2 * state_size:]
                if t_grad is not None and i == 1:
                    t_grad[0] = -(a.view(ys.shape[1:]) * f_at(0)).sum()
                a = a + grad_ys[i - 1].reshape(-1)
        _stats.record(stats, backward=True)
        param_grads = [g.view_as(p) for g, p in zip(a_params.split(n_params), params)]
        return (None, None, t_grad, a.view(ys.shape[1:]), *param_grads)


def odeint_adjoint(func: Callable, y0, t: torch.Tensor, *, rtol: float = 1e-7, atol: float = 1e-9,
                   method: str = "dopri5", options: dict | None = None,
                   adjoint_params: Sequence[torch.Tensor] | None = None,
                   adjoint_rtol: float | None = None, adjoint_atol: float | None = None,
                   adjoint_method: str | None = None, adjoint_options: dict | None = None):
    """``odeint`` whose backward pass solves the adjoint ODE instead of storing the graph.

    Gradients reach ``y0``, every entry of ``t`` and ``adjoint_params`` (by default the
    parameters of ``func``, which must then be an ``nn.Module``). The backward solve uses the
    forward's method, tolerances and options unless the ``adjoint_*`` arguments say otherwise;
    ``adjoint_options={"norm": "seminorm"}`` leaves the parameter adjoint out of step control.
    """
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise AdjointParamsError(
                "odeint_adjoint cannot find the parameters to differentiate: func is not an nn.Module. "
                "Pass adjoint_params=(tensors...) (or adjoint_params=() if there are none)"
            )
        adjoint_params = tuple(func.parameters())
    params = tuple(p for p in adjoint_params if isinstance(p, torch.Tensor) and p.requires_grad)
    tab = get_tableau(method)
    options = check_options(tab, options)
    rtol, atol = check_tolerances(rtol, atol)
    adjoint_tab = get_tableau(adjoint_method or method)
    if adjoint_options is None:
        # Inherit the forward's options when they fit the backward method. A forward `norm`
        # is for the state alone, not for the augmented state, so it is not inherited.
        same_kind = adjoint_tab.adaptive == tab.adaptive
        adjoint_options = {k: v for k, v in options.items() if k != "norm"} if same_kind else {}
    adjoint_options = dict(adjoint_options)
    seminorm = adjoint_options.get("norm") == "seminorm"
    if seminorm and not adjoint_tab.adaptive:
        raise InvalidOptionError(f"norm='seminorm' needs an adaptive adjoint method, got {adjoint_tab.name!r}")
    check_options(adjoint_tab, {k: v for k, v in adjoint_options.items() if not (k == "norm" and seminorm)})
    a_rtol, a_atol = check_tolerances(rtol if adjoint_rtol is None else adjoint_rtol,
                                      atol if adjoint_atol is None else adjoint_atol)
    settings = dict(tab=tab, rtol=rtol, atol=atol, options=options, adjoint_tab=adjoint_tab,
                    adjoint_rtol=a_rtol, adjoint_atol=a_atol, adjoint_options=adjoint_options)
    problem = make_problem(func, y0, t)
    ys = _AdjointSolve.apply(problem, settings, t, problem.y0, *params)
    return problem.unpack(ys)
