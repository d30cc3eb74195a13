"""The adjoint method (Chen et al. 2018, Algorithm 1) as a gradient strategy.

The forward solve stores only the solution at the output times. The backward pass
integrates the augmented state ``[z, a, a_theta]`` from the last output time to the first,

    dz/dt = f(t, z),   da/dt = -a df/dz,   da_theta/dt = -a df/dtheta,

restarting ``z`` from the stored solution and adding ``dL/dy(t_i)`` to ``a`` at each output
time, so memory does not grow with the number of steps. Gradients with respect to the
output times come for free: ``dL/dt_i = dL/dy_i . f(t_i, y_i)`` and
``dL/dt_0 = -a(t_0) . f(t_0, y_0)`` (without ``dL/dy_0``, since ``y(t_0) = y0``).
"""

from __future__ import annotations

import torch

from neuralode.ode import stats as _stats
from neuralode.ode.problem import CALLBACKS, ComponentRMSNorm, Problem, attach_callbacks, make_problem

ADJOINT_CALLBACKS = tuple(name + "_adjoint" for name in CALLBACKS)


class _AdjointSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Problem, setup, adjoint_setup, func, event, t: torch.Tensor, y0: torch.Tensor,
                *params: torch.Tensor):
        stats = _stats.SolveStats()
        problem.y0 = y0
        with torch.no_grad():
            solution = setup.integrate(problem, stats, t, event)
        stats.nfe = problem.nfe
        _stats.record(stats)
        ys = torch.stack(solution.ys)
        # The times the backward pass restarts at, in user time: the outputs, or [t0, event time].
        if solution.event_t is None:
            times = t.detach().to("cpu", torch.float64)
        else:
            times = torch.tensor([problem.user_time(problem.times[0]), problem.user_time(solution.event_t)],
                                 dtype=torch.float64)
        ctx.problem, ctx.adjoint_setup, ctx.func, ctx.times = problem, adjoint_setup, func, times
        ctx.event_s = problem.event_s = solution.event_t
        # Autograd runs backward outside the caller's autocast: the adjoint solve re-enters it,
        # so that func computes as it did in the forward solve.
        device_type = y0.device.type
        ctx.autocast = (device_type, torch.get_autocast_dtype(device_type), torch.is_autocast_enabled(device_type))
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        device_type, autocast_dtype, autocast_on = ctx.autocast
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_on):
            return _AdjointSolve._backward(ctx, grad_ys)

    @staticmethod
    def _backward(ctx, grad_ys: torch.Tensor):
        t, ys, *params = ctx.saved_tensors
        problem, setup, times = ctx.problem, ctx.adjoint_setup, ctx.times
        user_field = problem.user_field
        n_params = [p.numel() for p in params]
        state_shape = ys.shape[1:]
        state_size = state_shape.numel()
        dtype, device = ys.dtype, ys.device
        stats = _stats.SolveStats()

        def augmented(tt: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
            z, a = aug[:state_size].view(state_shape), aug[state_size:2 * state_size].view(state_shape)
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                dz = user_field(tt, z)
                if dz.requires_grad:
                    vjps = torch.autograd.grad(dz, (z, *params), -a, allow_unused=True)
                else:  # func does not depend on the state or the parameters (a field of t alone)
                    vjps = (None,) * (1 + len(params))
            parts = [dz.detach(), *vjps]
            like = [z, z, *params]
            return torch.cat([(p if p is not None else torch.zeros_like(q)).reshape(-1) for p, q in zip(parts, like)])

        def augmented_jacobian(tt: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
            return _augmented_jacobian(user_field, tt, aug, state_shape, params)

        t_grad = torch.zeros_like(t) if ctx.needs_input_grad[5] else None

        def f_at(i: int) -> torch.Tensor:
            stats.nfe += 1
            return user_field(torch.full((), times[i].item(), dtype=dtype, device=device), ys[i])

        sizes = [state_size, state_size, *n_params]
        options = setup.options
        if options.get("_seminorm"):
            norm = ComponentRMSNorm(sizes, include=[0, 1])
        elif options.get("norm") is not None:
            norm = options["norm"]
        else:
            norm = ComponentRMSNorm(sizes)
        backward_options = {k: v for k, v in options.items() if k not in ("_seminorm", "norm")}
        backward_options["_norm"] = norm
        warm = setup.solver.adaptive and "first_step" not in options
        a = grad_ys[-1].reshape(-1)
        a_params = torch.zeros(sum(n_params), dtype=dtype, device=device)
        with torch.no_grad():
            for i in range(len(times) - 1, 0, -1):
                if t_grad is not None and ctx.event_s is None:
                    t_grad[i] = (grad_ys[i] * f_at(i)).sum()
                aug0 = torch.cat([ys[i].reshape(-1), a, a_params])
                segment = make_problem(augmented, aug0, times[[i, i - 1]])
                segment.user_jacobian = augmented_jacobian
                attach_callbacks(segment, ctx.func, names=ADJOINT_CALLBACKS, supported=setup.solver.callbacks,
                                 method=setup.solver.name)
                step_options = dict(backward_options)
                if warm and stats.next_step:
                    # Start where the previous segment's controller left off, not from a fresh guess.
                    step_options["first_step"] = stats.next_step
                segment_setup = type(setup)(setup.solver, setup.rtol, setup.atol, step_options)
                aug = torch.stack(segment_setup.integrate(segment, stats).ys)[-1]
                stats.nfe += segment.nfe
                a = aug[state_size:2 * state_size]
                a_params = aug[2 * state_size:]
                if t_grad is not None and i == 1:
                    t_grad[0] = -(a.view(state_shape) * f_at(0)).sum()
                a = a + grad_ys[i - 1].reshape(-1)
        _stats.record(stats, backward=True)
        param_grads = [g.view_as(p) for g, p in zip(a_params.split(n_params), params)]
        return (None, None, None, None, None, t_grad, a.view(state_shape), *param_grads)


def _rows(out: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The Jacobian of the vector ``out`` with respect to ``inputs`` (flattened, concatenated),
    one row per element of ``out``: all rows in one batched backward pass where autograd can
    vectorise it, else one pass per row."""
    width = sum(x.numel() for x in inputs)
    if not out.requires_grad:
        return out.new_zeros(out.numel(), width)

    def join(grads, batch: tuple[int, ...]) -> torch.Tensor:
        return torch.cat([(g if g is not None else x.new_zeros(*batch, *x.shape)).reshape(*batch, -1)
                          for g, x in zip(grads, inputs)], dim=-1)

    try:
        eye = torch.eye(out.numel(), dtype=out.dtype, device=out.device)
        grads = torch.autograd.grad(out, inputs, eye, retain_graph=True, allow_unused=True, is_grads_batched=True)
        return join(grads, (out.numel(),))
    except RuntimeError:  # an operation without a batching rule
        return torch.stack([join(torch.autograd.grad(o, inputs, retain_graph=True, allow_unused=True), ())
                            for o in out])


def _augmented_jacobian(user_field, tt: torch.Tensor, aug: torch.Tensor, state_shape: torch.Size,
                        params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The exact Jacobian of the augmented field ``[f, -a df/dz, -a df/dtheta]`` with respect to
    ``[z, a, a_theta]``, for implicit methods as the backward method. With ``J = df/dz``,
    ``J_theta = df/dtheta`` and ``H`` the second derivatives of ``a . f``, its blocks are::

        [ J            0           0 ]
        [ -H_zz        -J^T        0 ]
        [ -H_theta,z   -J_theta^T  0 ]

    from two batched backward passes: the rows of ``[J, J_theta]`` (one per component of ``f``) and
    the rows of ``d(a J)/d[z, theta]`` (one per component of ``a J``, through a graph of the vjp)."""
    n = state_shape.numel()
    with torch.enable_grad():
        z = aug[:n].detach().view(state_shape).requires_grad_(True)
        a = aug[n:2 * n].detach().view(state_shape)
        inputs = (z, *params)
        dz = user_field(tt, z)
        f_rows = _rows(dz.reshape(-1), inputs)  # (n, n + P): [J, J_theta]
        if dz.requires_grad:
            (a_jac,) = torch.autograd.grad(dz, z, a, create_graph=True, allow_unused=True)
        else:
            a_jac = None
        h_rows = (_rows(a_jac.reshape(-1), inputs) if a_jac is not None  # (n, n + P): row j is d(a J)_j / d[z, theta]
                  else aug.new_zeros(n, f_rows.shape[1]))
    size = aug.numel()
    jac = aug.new_zeros(size, size)
    jac[:n, :n] = f_rows[:, :n]
    jac[n:, :n] = -h_rows.T
    jac[n:, n:2 * n] = -f_rows.T
    return jac.detach()


def solve_adjoint(problem: Problem, setup, adjoint_setup, func, t: torch.Tensor, event, params):
    """The solution at every output time (or at [t0, event]), differentiable by the adjoint;
    and the event's solver time (None without an event)."""
    ys = _AdjointSolve.apply(problem, setup, adjoint_setup, func, event, t, problem.y0, *params)
    return ys, problem.event_s
