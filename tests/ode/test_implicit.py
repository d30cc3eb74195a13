"""Implicit Runge-Kutta methods (implicit.py): order, stiff problems, stability, gradients by the
three strategies, Newton failures and options. (The shared tests run them on the smooth problems.)"""

import math

import pytest
import torch
from torch import nn

from neuralode.ode import (
    InvalidOptionError,
    MaxStepsExceededError,
    StepSizeUnderflowError,
    collect_stats,
    last_stats,
    odeint,
)
from neuralode.ode import NewtonError, ODESolverError
from neuralode.ode.solvers.implicit_tableaux import IMPLICIT_TABLEAUX
from tests.helpers import slow_when

F64 = torch.float64
FIXED = [name for name, tab in IMPLICIT_TABLEAUX.items() if not tab.adaptive]
L_STABLE = [name for name, tab in IMPLICIT_TABLEAUX.items() if tab.l_stable]
ORDER = {name: tab.order for name, tab in IMPLICIT_TABLEAUX.items()}


def slope(xs, ys):
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


class StiffLinear:
    """y' = A y + g(t) with eigenvalues -1 and -50 and exact solution y = (cos t, sin t) + e^{At} c."""

    def __init__(self):
        self.A = torch.tensor([[-1.0, 0.0], [49.0, -50.0]], dtype=F64)
        self.y0 = torch.tensor([2.0, 1.0], dtype=F64)

    def phi(self, t):
        return torch.stack([torch.cos(t), torch.sin(t)])

    def __call__(self, t, y):
        dphi = torch.stack([-torch.sin(t), torch.cos(t)])
        return self.A @ (y - self.phi(t)) + dphi

    def exact(self, t):
        c = self.y0 - self.phi(torch.tensor(0.0, dtype=F64))
        return self.phi(t) + torch.linalg.matrix_exp(self.A * t) @ c


@pytest.mark.parametrize("method", FIXED)
def test_convergence_order_on_a_linear_problem(method):
    prob = StiffLinear()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    # Steps with h * 50 <= 1: the asymptotic range, before stiff order reduction.
    steps = [0.02, 0.01, 0.005] if ORDER[method] < 5 else [0.04, 0.02, 0.01]
    errors = [(odeint(prob, prob.y0, t, method=method, options={"step_size": h})[-1] - prob.exact(t[-1]))
              .abs().max().item() for h in steps]
    assert abs(slope(steps, errors) - ORDER[method]) < 0.35, errors


def robertson(t, y):
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2, 3e7 * y2 * y2], -1)


def van_der_pol(t, y, mu=1000.0):
    return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


# float64 references: scipy's Radau at rtol=1e-13, atol=1e-16 with the exact Jacobian (Robertson
# at t=40 agrees with Hairer and Wanner's published value to 1e-13).
REFERENCES = {
    ("robertson", 40.0): [0.7158270687194571, 9.185534764559528e-06, 0.2841637457457774],
    ("robertson", 10.0): [0.8413699238415054, 1.623390937990719e-05, 0.15861384224911362],
    ("van der pol", 1.0): [1.9993333705063074, -0.0006670371231732574],
}


def reference(name, t1):
    return torch.tensor(REFERENCES[(name, t1)], dtype=F64)


@pytest.mark.parametrize("method", ["radau5", "kvaerno5"])
@pytest.mark.parametrize("name, field, y0, t1", [("robertson", robertson, [1.0, 0.0, 0.0], 40.0),
                                                 ("van der pol", van_der_pol, [2.0, 0.0], 1.0)])
def test_adaptive_stiff_methods_match_a_float64_reference(method, name, field, y0, t1):
    ref = reference(name, t1)
    t = torch.tensor([0.0, t1], dtype=F64)
    ys = odeint(field, torch.tensor(y0, dtype=F64), t, method=method, rtol=1e-6, atol=1e-8)
    stats = last_stats()
    assert ((ys[-1] - ref).abs() / (1e-8 + 1e-6 * ref.abs())).max() < 20, (ys[-1], ref)
    assert stats.nfe < 2000 and 0 < stats.n_jacobian < stats.n_accepted  # stiff: few steps, Jacobians reused


def hires(t, y):
    y1, y2, y3, y4, y5, y6, y7, y8 = y.unbind(0)
    r = 280.0 * y6 * y8
    return torch.stack([-1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007, 1.71 * y1 - 8.75 * y2,
                        -10.03 * y3 + 0.43 * y4 + 0.035 * y5, 8.32 * y2 + 1.71 * y3 - 1.12 * y4,
                        -1.745 * y5 + 0.43 * y6 + 0.43 * y7, -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
                        r - 1.81 * y7, -r + 1.81 * y7])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["radau5", "kvaerno5"])
def test_hires_over_its_whole_interval(method):
    """HIRES to t = 321.8122 (Hairer and Wanner's test set; the reference agrees with theirs)."""
    ref = torch.tensor([0.0007371312573325486, 0.00014424857263161487, 5.88872974096724e-05, 0.001175651343283115,
                        0.0023863561988307948, 0.006238968252741131, 0.0028499983951853817, 0.0028500016048146307],
                       dtype=F64)
    y0 = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0.0057], dtype=F64)
    ys = odeint(hires, y0, torch.tensor([0.0, 321.8122], dtype=F64), method=method, rtol=1e-7, atol=1e-9)
    assert ((ys[-1] - ref).abs() / (1e-9 + 1e-7 * ref.abs())).max() < 20


def test_an_explicit_method_refuses_a_stiff_problem_cleanly():
    with pytest.raises(MaxStepsExceededError, match="stiff"):
        odeint(van_der_pol, torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, 3000.0], dtype=F64),
               method="dopri5", rtol=1e-6, atol=1e-6, options={"max_num_steps": 300})


@pytest.mark.parametrize("method", ["implicit_euler", "trbdf2", "radauIIA5"])
def test_fixed_step_implicit_methods_take_steps_an_explicit_one_cannot(method):
    """Robertson with 100 steps of 0.1: far past explicit stability (|h lambda| ~ 1e3)."""
    ref = reference("robertson", 10.0)
    ys = odeint(robertson, torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 10.0], dtype=F64),
                method=method, options={"step_size": 0.1})
    assert (ys[-1] - ref).abs().max() < {1: 2e-3, 2: 1e-4}.get(ORDER[method], 1e-6)


@pytest.mark.parametrize("method", FIXED)
def test_a_stability_with_a_large_step(method):
    """y' = -1000 y, 10 steps of 0.5 (h lambda = -500): every method stays bounded; the L-stable
    ones damp it (|R(-500)| ~ 1/500 or less per step)."""
    y = odeint(lambda t, y: -1000.0 * y, torch.ones(1, dtype=F64), torch.tensor([0.0, 5.0], dtype=F64),
               method=method, options={"step_size": 0.5})[-1].abs().item()
    assert y <= 1.0 + 1e-12
    if method in L_STABLE:
        assert y < 1e-12


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(2, 2).double()
        self.k = nn.Parameter(torch.tensor(-1.5, dtype=F64))

    def forward(self, t, y):
        return self.k * y + torch.tanh(self.lin(y))


def _loss(func, y0, method, gradient, options=None, tol=1e-6):
    """Adaptive methods run on a pinned step sequence (first_step = max_step, never rejected at this
    tolerance): differences of an adaptive solve also move its step sizes (by ~tol), which the
    gradient of the discrete solve rightly does not see."""
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    adaptive = method not in IMPLICIT_TABLEAUX or IMPLICIT_TABLEAUX[method].adaptive
    if options is None:
        options = {"first_step": 0.05, "max_step": 0.05} if adaptive else {"step_size": 0.1}
    ys = odeint(func, y0, t, method=method, options=options, rtol=tol, atol=tol, gradient=gradient)
    return (ys ** 2).sum() + ys[1, 0]


def _finite_differences(func, y0, method, **kw):
    """Central differences of the solve itself, in y0 and in the parameter k. (A wide step: Newton
    stops at a tolerance, so the solve is smooth only above ~1e-12 of noise.)"""
    eps = 1e-4
    with torch.no_grad():
        dy = torch.stack([(_loss(func, y0 + eps * e, method, "direct", **kw) -
                           _loss(func, y0 - eps * e, method, "direct", **kw)) / (2 * eps)
                          for e in torch.eye(2, dtype=F64)])
        k = func.k.data.clone()
        func.k.data = k + eps
        plus = _loss(func, y0, method, "direct", **kw)
        func.k.data = k - eps
        minus = _loss(func, y0, method, "direct", **kw)
        func.k.data = k
    return dy, (plus - minus) / (2 * eps)


def _gradient(func, y0, method, gradient, **kw):
    y = y0.clone().requires_grad_(True)
    func.zero_grad()
    with collect_stats() as stats:
        _loss(func, y, method, gradient, **kw).backward()
    return y.grad, func.k.grad.clone(), stats


# `make test-fast`: one method of each kind (plain, SDIRK, Gauss, Radau); the rest, kvaerno5 (1 s a
# case) among them, in the full suite.
FD_METHODS = [slow_when(m not in ("implicit_euler", "trbdf2", "gl4", "radau5"), m, id=m) for m in IMPLICIT_TABLEAUX]


@pytest.mark.parametrize("method", FD_METHODS)
def test_direct_and_checkpoint_gradients_match_finite_differences(method):
    """Newton without a graph, then one differentiable step: the gradient of the converged solve."""
    func, y0 = Field(), torch.tensor([0.5, -0.3], dtype=F64)
    fd_y, fd_k = _finite_differences(func, y0, method)
    for gradient in ("direct", "checkpoint"):
        gy, gk, _ = _gradient(func, y0, method, gradient)
        torch.testing.assert_close(gy, fd_y, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(gk, fd_k, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("method", FD_METHODS)
def test_adjoint_gradients_match_finite_differences_to_the_methods_accuracy(method):
    """The adjoint solves the continuous adjoint ODE with the method (with its augmented field's
    exact Jacobian), so it agrees with the discrete gradient to the method's error:
    exactly for the symmetric Gauss methods (midpoint, gl4, gl6), O(h^p) for the others."""
    func, y0 = Field(), torch.tensor([0.5, -0.3], dtype=F64)
    fd_y, fd_k = _finite_differences(func, y0, method)
    gy, gk, stats = _gradient(func, y0, method, "adjoint")
    tol = {1: 0.5, 2: 2e-2, 3: 2e-3}.get(ORDER[method], 1e-5)
    torch.testing.assert_close(gy, fd_y, rtol=tol, atol=1e-8)
    torch.testing.assert_close(gk, fd_k, rtol=tol, atol=1e-8)
    assert stats.n_jacobian >= 2  # forward and backward both took Jacobians


class QuinticOffLine(nn.Module):
    """f = a + (y - (a t + b))^5: y = a t + b is a solution (from y0 = a + b at t = 1) on which the
    field's nonlinear part vanishes, so every method follows it exactly once its Newton solve has
    converged; torchdiffeq's own gradient tests use it."""

    a, b = 0.2, 3.0

    def forward(self, t, y):
        return self.a + (y - (self.a * t + self.b)) ** 5


def test_fixed_steps_converge_newton_on_every_step():
    """A step must not stop after one iteration on the last solve's rate: after an exactly
    converged step (rate 0) that accepted the first iterate and left an error of 7e-5."""
    f, t = QuinticOffLine(), torch.linspace(1.0, 8.0, 10, dtype=F64)
    for method in FIXED:
        ys = odeint(f, torch.tensor([f.a + f.b], dtype=F64), t, method=method)
        torch.testing.assert_close(ys[:, 0], f.a * t + f.b, rtol=0, atol=1e-10, msg=method)


@pytest.mark.parametrize("method", [slow_when(m not in ("implicit_euler", "radauIIA5", "gl4"), m, id=m)
                                    for m in IMPLICIT_TABLEAUX])
def test_adjoint_passes_gradcheck_in_y0_and_t(method):
    """torchdiffeq's gradient test: the adjoint's gradients with respect to y0 and every output
    time match the forward solve's finite differences (float64, default options)."""
    f = QuinticOffLine()
    y0 = torch.tensor([f.a + f.b], dtype=F64, requires_grad=True)
    t = torch.linspace(1.0, 8.0, 10, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y0, t: odeint(f, y0, t, method=method, gradient="adjoint"), (y0, t))


@pytest.mark.parametrize("jacobian", ["auto", "finite_difference"])
def test_perturb_keeps_every_evaluation_off_the_grid(jacobian):
    """options["perturb"]: f is evaluated just after a step's start and just before its end, never
    on a grid time; the Jacobians (of Newton and of the gradient's step) included."""
    grid = torch.linspace(0.0, 1.0, 5, dtype=F64)
    for method in FIXED:
        times = []

        def f(t, y):
            times.append(float(t))
            return -y * (1 + y ** 2)

        y0 = torch.ones(1, dtype=F64, requires_grad=True)
        odeint(f, y0, grid, method=method, options={"perturb": True, "jacobian": jacobian})[-1].sum().backward()
        on_grid = [s for s in times if s in grid.tolist()]
        assert times and not on_grid, (method, on_grid)


def test_implicit_method_as_the_adjoints_backward_method():
    func, y0 = Field(), torch.tensor([0.5, -0.3], dtype=F64)
    fd_y, fd_k = _finite_differences(func, y0, "dopri5", options={}, tol=1e-11)
    y = y0.clone().requires_grad_(True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ys = odeint(func, y, t, rtol=1e-10, atol=1e-10, gradient="adjoint", adjoint_method="radau5",
                adjoint_rtol=1e-9, adjoint_atol=1e-9)
    ((ys ** 2).sum() + ys[1, 0]).backward()
    torch.testing.assert_close(y.grad, fd_y, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(func.k.grad, fd_k, rtol=1e-5, atol=1e-8)


def test_jacobian_by_differences_agrees_and_is_reused():
    prob = StiffLinear()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    exact = odeint(prob, prob.y0, t, method="radauIIA5", options={"step_size": 0.05})
    assert last_stats().n_jacobian == 1  # a linear field: one Jacobian serves every step
    fd = odeint(prob, prob.y0, t, method="radauIIA5", options={"step_size": 0.05, "jacobian": "finite_difference"})
    torch.testing.assert_close(fd, exact, rtol=1e-9, atol=1e-10)


def test_newton_failure_names_the_method_time_and_step():
    """y' = y^2 from 1: implicit Euler's y1 = 1 + h y1^2 has no real solution for h > 1/4."""
    with pytest.raises(NewtonError, match=r"implicit_euler.*t=0 with step size 0\.5.*smaller options\['step_size'\]"):
        odeint(lambda t, y: y * y, torch.ones(1, dtype=F64), torch.tensor([0.0, 0.9], dtype=F64),
               method="implicit_euler", options={"step_size": 0.5})


def test_adaptive_newton_failure_is_a_rejected_step():
    """With one Newton iteration allowed, radau5 still solves (failed solves shrink the step),
    and where no step can work it stops with StepSizeUnderflowError, not a hang."""
    ys = odeint(van_der_pol, torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                method="radau5", rtol=1e-5, atol=1e-5, options={"newton_max_iter": 2})
    assert last_stats().n_rejected > 0 and torch.isfinite(ys).all()
    with pytest.raises(StepSizeUnderflowError, match="radau5"):
        odeint(lambda t, y: y * y, torch.ones(1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64), method="radau5")


@pytest.mark.parametrize("method, options, match", [
    ("gl4", {"newton_tol": -1.0}, "newton_tol"),
    ("gl4", {"newton_max_iter": 0}, "newton_max_iter"),
    ("radau5", {"jacobian": "symbolic"}, "jacobian"),
    ("radau5", {"step_size": 0.1}, "step_size"),
    ("trbdf2", {"rtol_newton": 1e-3}, "rtol_newton"),
])
def test_bad_options_are_refused_by_name(method, options, match):
    with pytest.raises(InvalidOptionError, match=match):
        odeint(lambda t, y: -y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method=method,
               options=options)


def test_newton_options_are_not_passed_to_an_explicit_adjoint_method():
    func, y0 = Field(), torch.tensor([0.5, -0.3], dtype=F64, requires_grad=True)
    ys = odeint(func, y0, torch.tensor([0.0, 1.0], dtype=F64), method="radau5", options={"newton_tol": 1e-3},
                gradient="adjoint", adjoint_method="dopri5")
    ys[-1].sum().backward()
    assert torch.isfinite(y0.grad).all()


def test_the_adjoints_augmented_field_has_an_exact_jacobian():
    """Its blocks [J 0 0; -H_zz -J^T 0; -H_theta,z -J_theta^T 0] match central differences of the
    augmented field itself, parameters and second derivatives included."""
    from neuralode.ode.adjoint import _augmented_jacobian

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    params = tuple(net.parameters())
    f = lambda t, y: net(y) * torch.cos(t)  # noqa: E731
    t, n = torch.tensor(0.3, dtype=F64), 3
    aug = torch.randn(2 * n + sum(p.numel() for p in params), dtype=F64)

    def augmented(v):
        z = v[:n].detach().requires_grad_(True)
        with torch.enable_grad():
            dz = f(t, z)
            vjps = torch.autograd.grad(dz, (z, *params), -v[n:2 * n])
        return torch.cat([dz.detach(), *(g.reshape(-1) for g in vjps)])

    eps = 1e-6
    central = torch.stack([(augmented(aug + eps * e) - augmented(aug - eps * e)) / (2 * eps)
                           for e in torch.eye(aug.numel(), dtype=F64)], dim=1)
    torch.testing.assert_close(_augmented_jacobian(f, t, aug, torch.Size([n]), params), central,
                               rtol=1e-7, atol=1e-8)


def test_an_implicit_backward_method_uses_the_exact_jacobian():
    """"auto" and "autograd" take the augmented field's exact Jacobian (jacrev cannot transform it):
    the same gradients as forced differences, with fewer evaluations of func."""
    func, t = Field(), torch.tensor([0.0, 1.0], dtype=F64)
    grads, nfe = {}, {}
    for jacobian in ("auto", "autograd", "finite_difference"):
        func.zero_grad()
        y0 = torch.tensor([0.5, -0.3], dtype=F64, requires_grad=True)
        with collect_stats() as stats:
            ys = odeint(func, y0, t, method="trbdf2", options={"step_size": 0.1, "jacobian": jacobian},
                        gradient="adjoint")
            ys[-1].sum().backward()
        grads[jacobian], nfe[jacobian] = (y0.grad, func.k.grad.clone()), stats.nfe_backward
    for jacobian in ("auto", "autograd"):
        for exact, difference in zip(grads[jacobian], grads["finite_difference"]):
            torch.testing.assert_close(exact, difference, rtol=1e-6, atol=1e-9)
        assert nfe[jacobian] < nfe["finite_difference"], nfe
