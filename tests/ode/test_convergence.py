"""Convergence order of every method, and of the dense output."""

import math

import pytest
import torch

from neuralode.ode import last_stats, odeint
from neuralode.ode import make_solver
from tests.helpers import slow_when
from tests.ode.problems import ADAPTIVE, EXTERNAL, FIXED, LOW_ORDER, MULTISTEP, ORDER, PROBLEMS


def slope(xs, ys):
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


@pytest.mark.parametrize("method", [m for m in FIXED if m not in MULTISTEP])  # multistep: test_adams.py
def test_fixed_step_order(method):
    prob = PROBLEMS["linear"]()
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    steps = [0.1, 0.05, 0.025, 0.0125]
    errors = []
    for h in steps:
        ys = odeint(prob, prob.y0, t, method=method, options={"step_size": h})
        errors.append((ys[-1] - prob.exact(t)[-1]).abs().max().item())
    assert abs(slope(steps, errors) - ORDER[method]) < 0.3, errors


def one_step_setup(method):
    """The rotation problem seen by single steps, and step sizes in each method's asymptotic range."""
    prob = PROBLEMS["rotation"]()
    steps = [0.4, 0.2, 0.1] if method != "dopri8" else [1.0, 0.7, 0.5]
    return make_solver(method), prob, lambda t, y, perturb=0: prob(torch.tensor(t), y), steps


# A multistep method's first step is of its starting order 1 (its order: test_adams.py); scipy_solver
# takes its own steps inside one.
@pytest.mark.parametrize("method", [m for m in ADAPTIVE if m not in MULTISTEP + EXTERNAL])
def test_local_order_of_adaptive_methods(method):
    """One step of size h has local error O(h^(p+1)); measured on y' = cos(t)-like rotation."""
    solver, prob, f, steps = one_step_setup(method)
    errors = []
    for h in steps:
        y1 = solver.step(f, 0.0, prob.y0, h, solver.init(f, 0.0, prob.y0)).y1
        errors.append((y1 - prob.exact(torch.tensor([h], dtype=torch.float64))[0]).abs().max().item())
    assert abs(slope(steps, errors) - (solver.order + 1)) < 0.5, errors


@pytest.mark.parametrize("method, order", [("dopri5", 4), ("tsit5", 4), ("dopri8", 7), ("bosh3", 3),
                                           ("fehlberg2", 2), ("adaptive_heun", 2)])
def test_dense_output_order(method, order):
    """Interpolants: dopri5/tsit5 4th order, DOP853 7th, Hermite 3rd (bosh3; capped by the step's own
    order for the 2nd-order methods): error O(h^(q+1))."""
    solver, prob, f, steps = one_step_setup(method)
    errors = []
    for h in steps:
        step = solver.step(f, 0.0, prob.y0, h, solver.init(f, 0.0, prob.y0))
        mid = solver.interpolant(f, 0.0, h, prob.y0, step, None)(0.3 * h)
        errors.append((mid - prob.exact(torch.tensor([0.3 * h], dtype=torch.float64))[0]).abs().max().item())
    assert abs(slope(steps, errors) - (order + 1)) < 0.5, errors


# `make test-fast` leaves out adaptive_heun, bosh3 and radau5 (1-2 s each at the tight end; fehlberg2,
# tsit5 and kvaerno5 stand for them).
@pytest.mark.parametrize("method", [slow_when(m in ("adaptive_heun", "bosh3", "radau5"), m, id=m) for m in ADAPTIVE])
def test_error_falls_as_tolerance_tightens(method):
    prob = PROBLEMS["linear"]()
    t = torch.tensor([0.0, 4.0], dtype=torch.float64)
    errors, nfes = [], []
    for tol in ([1e-3, 1e-4, 1e-5, 1e-6] if method in LOW_ORDER else [1e-3, 1e-5, 1e-7, 1e-9]):
        ys = odeint(prob, prob.y0, t, method=method, rtol=tol, atol=tol)
        errors.append((ys[-1] - prob.exact(t)[-1]).abs().max().item())
        nfes.append(last_stats().nfe)
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert all(b > a for a, b in zip(nfes, nfes[1:])), nfes
    # fehlberg2 controls a first-order estimate: 1e-3 at tol 1e-6 here, as torchdiffeq's does.
    assert errors[-1] < (2e-3 if method in LOW_ORDER else 1e-7)


def test_fsal_tableaux_reuse_their_last_stage_input_as_y1():
    from neuralode.ode.solvers.runge_kutta import ExplicitRungeKutta, _combine
    from neuralode.ode.solvers.tableaux import TABLEAUX

    reusing = {name for name, tab in TABLEAUX.items() if tab.last_stage_at_y1}
    assert {"dopri5", "bosh3", "tsit5"} <= reusing
    assert reusing == {name for name, tab in TABLEAUX.items() if tab.fsal}
    f = lambda t, y: torch.stack([y[:, 1], -torch.sin(y[:, 0]) * (1 + t)], 1)  # noqa: E731
    y = torch.randn(5, 2, dtype=torch.float64)
    for name in reusing:
        solver = ExplicitRungeKutta(TABLEAUX[name])
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                step = solver.step(lambda t, y, perturb=0: f(t, y), 0.1, y, 0.3, f(0.1, y))
            b = torch.tensor(TABLEAUX[name].b, dtype=y.dtype)
            torch.testing.assert_close(step.y1, _combine(y, step.stages, b, 0.3), rtol=0, atol=1e-14)
            torch.testing.assert_close(step.stages[-1], f(0.4, step.y1), rtol=0, atol=1e-14)


def test_dopri5_takes_torchdiffeqs_steps():
    """dopri5's error estimate and step-size rule are torchdiffeq's, so a torchdiffeq user who
    switches the import gets the same attempted steps, rejections included; only the last step
    differs, since ours ends on the last output time where torchdiffeq's steps past it."""
    torchdiffeq = pytest.importorskip("torchdiffeq")

    class VanDerPol(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.steps = []

        def forward(self, t, y):
            return torch.stack([y[1], 3.0 * (1 - y[0] ** 2) * y[1] - y[0]])

        def callback_step(self, t0, y0, dt):
            self.steps.append((float(t0), float(dt)))

    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 6, 4, dtype=torch.float64)
    ours, theirs = VanDerPol(), VanDerPol()
    odeint(ours, y0, t, rtol=1e-6, atol=1e-6, method="dopri5")
    torchdiffeq.odeint(theirs, y0, t, rtol=1e-6, atol=1e-6, method="dopri5")
    assert len(ours.steps) > 50
    assert len(ours.steps) == len(theirs.steps)
    for (t_ours, h_ours), (t_theirs, h_theirs) in zip(ours.steps[:-1], theirs.steps[:-1]):
        assert t_ours == pytest.approx(t_theirs, rel=1e-9, abs=1e-12)
        assert h_ours == pytest.approx(h_theirs, rel=1e-6)
    (t_last, h_last), (t_theirs, h_theirs) = ours.steps[-1], theirs.steps[-1]
    assert t_last + h_last == pytest.approx(6.0, rel=1e-12)
    assert t_theirs + h_theirs > 6.0


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8"])
def test_dense_weights_are_the_tableaus_own_interpolant(method):
    """The interpolant evaluates ``dense(theta)`` as one coefficient matrix: it must give the
    tableau's weights at every theta (ends included), in one product for many output times."""
    from neuralode.ode.solvers.runge_kutta import dense_weights
    from neuralode.ode.solvers.tableaux import TABLEAUX

    tab = TABLEAUX[method]
    thetas = [0.0, 1e-3, 0.25, 0.5, 0.731, 0.999, 1.0]
    expected = torch.tensor([[0.7 * w for w in tab.dense(th)] for th in thetas], dtype=torch.float64)
    torch.testing.assert_close(dense_weights(tab, thetas, 0.7), expected, rtol=0, atol=1e-12)
    # at theta = 1 the dense output is the step's solution: its weights are h b (DOP853's extra
    # stages weigh nothing there)
    at_end = dense_weights(tab, [1.0], 0.7)[0]
    b = torch.tensor(tab.b, dtype=torch.float64)
    torch.testing.assert_close(at_end[:len(b)], 0.7 * b, rtol=0, atol=1e-12)
    assert bool((at_end[len(b):].abs() < 1e-12).all())

    solver, prob, f, _ = one_step_setup(method)
    step = solver.step(f, 0.0, prob.y0, 0.5, solver.init(f, 0.0, prob.y0))
    interpolant = solver.interpolant(f, 0.0, 0.5, prob.y0, step, None)
    together = interpolant.at([0.1, 0.2, 0.45])
    for s, y in zip([0.1, 0.2, 0.45], together):
        torch.testing.assert_close(y, interpolant(s), rtol=0, atol=1e-15)
