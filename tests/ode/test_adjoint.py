"""The adjoint backward (Algorithm 1) against direct backpropagation through the solver."""

import pytest
import torch
from torch import nn

from neuralode.ode import collect_stats, odeint, odeint_adjoint


class Field(nn.Module):
    """A small time-dependent MLP vector field, plus a parameter it never uses."""

    def __init__(self, dim=2, hidden=16):
        super().__init__()
        self.l1 = nn.Linear(dim + 1, hidden)
        self.l2 = nn.Linear(hidden, dim)
        self.unused = nn.Parameter(torch.ones(3))

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(torch.cat([y, t.expand(*y.shape[:-1], 1)], -1))))


def loss_fn(ys):
    return (ys**2).sum() + ys[1:].sum(0).prod(-1).sum()


def gradients(solver, func, y0, t, **kwargs):
    ys = solver(func, y0, t, **kwargs)
    return torch.autograd.grad(loss_fn(ys), [y0, t, *func.parameters()], allow_unused=True)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    func = Field().double()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.1, 1.5], dtype=torch.float64, requires_grad=True)
    return func, y0, t


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8", pytest.param("bosh3", marks=pytest.mark.slow)])
@pytest.mark.parametrize("flip", [False, True])
def test_adjoint_matches_direct_backprop(setup, method, flip):
    func, y0, t = setup
    if flip:
        t = t.detach().flip(0).requires_grad_(True)
    kwargs = dict(rtol=1e-10, atol=1e-10, method=method)
    direct = gradients(odeint, func, y0, t, **kwargs)
    adjoint = gradients(odeint_adjoint, func, y0, t, **kwargs)
    names = ["y0", "t"] + [name for name, _ in func.named_parameters()]
    for name, d, a in zip(names, direct, adjoint):
        if name == "unused":
            assert d is None and torch.equal(a, torch.zeros_like(a))
            continue
        torch.testing.assert_close(a, d, rtol=1e-6, atol=1e-6 * d.abs().max().item(), msg=f"gradient of {name}")


def test_fixed_step_adjoint(setup):
    func, y0, t = setup
    kwargs = dict(method="rk4", options={"step_size": 0.01})
    direct = gradients(odeint, func, y0, t, **kwargs)
    adjoint = gradients(odeint_adjoint, func, y0, t, **kwargs)
    for d, a in zip(direct[:2], adjoint[:2]):
        torch.testing.assert_close(a, d, rtol=1e-5, atol=1e-6)


def test_unused_parameter_gets_zero_gradient(setup):
    func, y0, t = setup
    odeint_adjoint(func, y0, t, rtol=1e-6, atol=1e-6).sum().backward()
    assert func.unused.grad is not None and torch.equal(func.unused.grad, torch.zeros(3, dtype=torch.float64))
    assert func.l1.weight.grad.abs().sum() > 0


def test_gradcheck_float64():
    torch.manual_seed(1)
    func = Field(hidden=4).double()
    y0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    w = func.l1.weight

    def f(y0, t, w):
        return odeint_adjoint(func, y0, t, rtol=1e-11, atol=1e-11, adjoint_params=(w,))

    assert torch.autograd.gradcheck(f, (y0, t, w), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_tuple_state_adjoint(setup):
    func, y0, t = setup
    extra = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def pair(t, state):
        y, s = state
        return func(t, y), -s * y.pow(2).sum(-1)

    def grads(solver):
        ys, ss = solver(pair, (y0, extra), t, rtol=1e-10, atol=1e-10, **({"adjoint_params": tuple(func.parameters())}
                                                                         if solver is odeint_adjoint else {}))
        return torch.autograd.grad(ys.pow(2).sum() + ss.sum(), [y0, extra, func.l1.weight])

    for d, a in zip(grads(odeint), grads(odeint_adjoint)):
        torch.testing.assert_close(a, d, rtol=1e-6, atol=1e-7)


def test_seminorm_same_gradients_fewer_backward_evaluations():
    torch.manual_seed(0)
    func = Field(dim=2, hidden=64)
    y0 = torch.randn(64, 2, requires_grad=True)
    t = torch.tensor([0.0, 2.0])
    results = {}
    for norm in ["rms", "seminorm"]:
        func.zero_grad()
        with collect_stats() as stats:
            ys = odeint_adjoint(func, y0, t, rtol=1e-5, atol=1e-5, adjoint_options={"norm": norm})
            gy0, gw = torch.autograd.grad(loss_fn(ys), [y0, func.l1.weight])
        results[norm] = (gy0, gw, stats.nfe_backward, stats.nfe_forward)
    (gy_rms, gw_rms, nfe_rms, fwd_rms), (gy_semi, gw_semi, nfe_semi, fwd_semi) = results.values()
    assert fwd_rms == fwd_semi
    assert nfe_semi < nfe_rms
    torch.testing.assert_close(gy_semi, gy_rms, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(gw_semi, gw_rms, rtol=1e-3, atol=1e-3)


def test_memory_does_not_grow_with_steps():
    """The forward pass of the adjoint keeps no graph: saved tensors do not depend on NFE."""
    torch.manual_seed(0)
    func = Field(hidden=32)
    y0 = torch.randn(16, 2, requires_grad=True)
    t = torch.tensor([0.0, 1.0])

    def saved_bytes(solver, tol):
        total = []

        def pack(x):
            total.append(x.numel() * x.element_size())
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            solver(func, y0, t, rtol=tol, atol=tol)
        return sum(total)

    assert saved_bytes(odeint_adjoint, 1e-3) == saved_bytes(odeint_adjoint, 1e-9)
    assert saved_bytes(odeint, 1e-9) > 3 * saved_bytes(odeint, 1e-3)


def test_stats_count_forward_and_backward(setup):
    func, y0, t = setup
    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = func

        def forward(self, t, y):
            calls.append(torch.is_grad_enabled())
            return self.inner(t, y)

    counting = Counting()
    with collect_stats() as stats:
        ys = odeint_adjoint(counting, y0, t.detach(), rtol=1e-6, atol=1e-6)
        n_forward = len(calls)
        ys.sum().backward()
    assert stats.nfe_forward == n_forward
    assert stats.nfe_backward == len(calls) - n_forward
    assert stats.n_solves == 1


def test_direct_mode_time_gradient_matches_finite_difference(setup):
    func, y0, t = setup
    ys = odeint(func, y0.detach(), t, rtol=1e-10, atol=1e-10)
    (g,) = torch.autograd.grad(ys[-1].sum(), [t])
    eps = 1e-6
    for i in [0, len(t) - 1]:
        tp, tm = t.detach().clone(), t.detach().clone()
        tp[i] += eps
        tm[i] -= eps
        fd = (odeint(func, y0.detach(), tp, rtol=1e-10, atol=1e-10)[-1].sum()
              - odeint(func, y0.detach(), tm, rtol=1e-10, atol=1e-10)[-1].sum()) / (2 * eps)
        assert abs(g[i].item() - fd.item()) < 1e-5
