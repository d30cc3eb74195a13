"""Adams methods (explicit_adams, implicit_adams / fixed_adams, adaptive adams) and scipy_solver:
torchdiffeq's results, convergence order, accuracy and cost, dense output, gradients by every
strategy, and options refused by name."""

import functools
import math
import sys
import warnings

import pytest
import torch

from neuralode.ode import InvalidOptionError, last_stats, odeint, odeint_dense, odeint_event
from tests.ode.problems import PROBLEMS, SmallField
from tests.ode.test_convergence import slope

F64 = torch.float64


def oscillator(t, y):
    """A time-dependent oscillator: smooth, no closed form (references come from dopri8)."""
    return torch.stack([y[1], -y[0]]) * (1 + 0.1 * t)


Y0 = torch.tensor([1.0, 0.3], dtype=F64)
T9 = torch.linspace(0.0, 2.0, 9, dtype=F64)


def kepler(t, y):
    """The two-body problem: a closed orbit of eccentricity 0.5 and period 2 pi."""
    q, p = y[:2], y[2:]
    return torch.cat([p, -q / (q * q).sum() ** 1.5])


KEPLER_Y0 = torch.tensor([0.5, 0.0, 0.0, math.sqrt(3.0)], dtype=F64)


# --------------------------------------------------------------------------- torchdiffeq's semantics
@pytest.mark.parametrize("method, options", [
    ("explicit_adams", dict(step_size=0.05)),  # AB11, unstable here: the same blow-up as torchdiffeq's
    ("explicit_adams", dict(step_size=0.05, max_order=5)),
    ("explicit_adams", dict(step_size=0.05, max_order=2)),  # rk4 throughout
    ("implicit_adams", dict(step_size=0.05)),
    ("implicit_adams", dict(step_size=0.25, max_iters=1)),  # the corrector never converges
    ("fixed_adams", dict(step_size=0.05, interp="cubic")),
    ("fixed_adams", dict(step_size=0.05, perturb=True)),
    ("implicit_adams", {}),  # the grid is the output times
])
def test_fixed_adams_gives_torchdiffeqs_results(method, options):
    torchdiffeq = pytest.importorskip("torchdiffeq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_order < 4, non-convergence: both warn
        expected = torchdiffeq.odeint(oscillator, Y0, T9, method=method, options=dict(options))
        ours = odeint(oscillator, Y0, T9, method=method, options=dict(options))
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore:.*did not converge")  # both warn at this step size
def test_fixed_adams_evaluations_match_torchdiffeqs():
    # one evaluation a step, three more in each of the two rk4 start-up steps, and the corrector's
    counts = {}
    for name in ("torchdiffeq", "ours"):
        calls = []

        def f(t, y):
            calls.append(float(t))
            return oscillator(t, y)

        if name == "ours":
            odeint(f, Y0, T9, method="implicit_adams", options=dict(step_size=0.1))
        else:
            pytest.importorskip("torchdiffeq").odeint(f, Y0, T9, method="implicit_adams", options=dict(step_size=0.1))
        counts[name] = len(calls)
    assert counts["ours"] == counts["torchdiffeq"]


def test_non_convergence_warns():
    with pytest.warns(UserWarning, match="corrector iteration did not converge"):
        odeint(oscillator, Y0, T9, method="implicit_adams", options=dict(step_size=0.25, max_iters=1))


# --------------------------------------------------------------------------- convergence order
def converged(method, max_order):
    """Options under which implicit_adams iterates its corrector to convergence (rtol = atol = 1e-13),
    so that the iteration does not limit the accuracy."""
    return dict(max_order=max_order, **({"max_iters": 40} if method == "implicit_adams" else {}))


@pytest.mark.parametrize("method, max_order, order", [
    ("explicit_adams", 4, 3), ("explicit_adams", 5, 4), ("implicit_adams", 4, 4), ("implicit_adams", 5, 5),
    ("implicit_adams", 12, 5),
])
def test_fixed_adams_convergence_order(method, max_order, order):
    """Global order on a linear problem with an exact solution: the formula's, capped by the
    start-up (the solver's ``order``)."""
    prob = PROBLEMS["linear"]()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    steps = [0.05, 0.025, 0.0125, 0.00625]
    errors = [(odeint(prob, prob.y0, t, method=method, options=dict(step_size=h, **converged(method, max_order)),
                      rtol=1e-13, atol=1e-13)[-1] - prob.exact(t)[-1]).abs().max().item() for h in steps]
    assert abs(slope(steps, errors) - order) < 0.3, errors


@pytest.mark.parametrize("method, max_order, order", [("explicit_adams", 5, 4), ("implicit_adams", 5, 5)])
def test_uneven_grid_keeps_the_order(method, max_order, order):
    """The coefficients follow the actual past times (torchdiffeq's assume an even grid)."""
    prob = PROBLEMS["linear"]()
    t = torch.tensor([0.0, 1.0], dtype=F64)

    def grid(n):
        return lambda f, y0, tt: torch.tensor([i / n + 0.3 * math.sin(2 * math.pi * i / n) / n for i in range(n)]
                                              + [1.0], dtype=F64)

    ns = [20, 40, 80, 160]
    errors = [(odeint(prob, prob.y0, t, method=method, options=dict(grid_constructor=grid(n), **converged(method, max_order)),
                      rtol=1e-13, atol=1e-13)[-1] - prob.exact(t)[-1]).abs().max().item() for n in ns]
    assert abs(slope([1 / n for n in ns], errors) - order) < 0.4, errors


# --------------------------------------------------------------------------- adaptive adams
@pytest.mark.parametrize("tol", [1e-6, 1e-9])
def test_adams_reaches_the_tolerance(tol):
    prob = PROBLEMS["linear"]()
    t = torch.linspace(0.0, 10.0, 11, dtype=F64)
    ys = odeint(prob, prob.y0, t, method="adams", rtol=tol, atol=tol)
    err = (ys - prob.exact(t)).abs().max().item()
    assert err < 30 * tol, err


def test_adams_takes_fewer_evaluations_than_dopri5_at_tight_tolerance():
    """Two evaluations a step at order up to 12 against dopri5's six at order 5 (the benchmark,
    scripts/bench_adams.py, has the full table). Kepler orbit, one period, tolerance 1e-10."""
    t = torch.tensor([0.0, 2 * math.pi], dtype=F64)
    result = {}
    for method in ("adams", "dopri5"):
        y1 = odeint(kepler, KEPLER_Y0, t, method=method, rtol=1e-10, atol=1e-10)[-1]
        result[method] = (last_stats().nfe, (y1 - KEPLER_Y0).abs().max().item())
    assert result["adams"][0] < 0.6 * result["dopri5"][0], result
    assert result["adams"][1] < 1e-7, result


def test_adams_dense_output_between_steps():
    """Outputs between steps come from the corrector's polynomial: about as accurate as the steps,
    and they do not shorten the steps."""
    prob = PROBLEMS["linear"]()
    tol = 1e-9
    few = torch.tensor([0.0, 4.0], dtype=F64)
    many = torch.linspace(0.0, 4.0, 401, dtype=F64)
    odeint(prob, prob.y0, few, method="adams", rtol=tol, atol=tol)
    steps_few = last_stats().n_accepted
    ys = odeint(prob, prob.y0, many, method="adams", rtol=tol, atol=tol)
    assert last_stats().n_accepted == steps_few
    assert (ys - prob.exact(many)).abs().max().item() < 30 * tol
    dense = odeint_dense(prob, prob.y0, 0.0, 4.0, method="adams", rtol=tol, atol=tol)
    # the same polynomials, evaluated in other batches: equal to rounding of the high-order weights
    torch.testing.assert_close(dense(many[1:-1]), ys[1:-1], rtol=1e-10, atol=1e-11)


def test_adams_dense_output_order():
    """At a fixed order the interpolant is of the corrector's order: error O(h^(k+2)) at mid-step."""
    from neuralode.ode.solvers.adams import AdaptiveAdams, History

    prob = PROBLEMS["rotation"]()
    solver = AdaptiveAdams()
    f = lambda t, y, perturb=0: prob(torch.tensor(t), y)  # noqa: E731
    errors, hs = [], [0.2, 0.1, 0.05]
    for h in hs:
        # an exact history of 4 slopes at -3h..0, so the step runs at order 4 (corrector 5)
        times = tuple(-j * h for j in range(4))
        slopes = torch.stack([f(s, prob.exact(torch.tensor([s], dtype=F64))[0]) for s in times])
        step = solver.step(f, 0.0, prob.y0, h, History(times, slopes, order=4))
        mid = solver.interpolant(f, 0.0, h, prob.y0, step, None)(0.4 * h)
        errors.append((mid - prob.exact(torch.tensor([0.4 * h], dtype=F64))[0]).abs().max().item())
    assert abs(slope(hs, errors) - 6) < 0.5, errors


def test_adams_raises_its_order_on_smooth_problems():
    from neuralode.ode.solvers.adams import AdaptiveAdams

    solver = AdaptiveAdams()
    solver.rtol = solver.atol = 1e-4  # what prepare() takes from the controller
    prob = PROBLEMS["linear"]()
    orders = []
    f = lambda t, y, perturb=0: prob(torch.tensor(t), y)  # noqa: E731
    history, t, y, h = solver.init(f, 0.0, prob.y0), 0.0, prob.y0, 1e-3
    for _ in range(30):
        step = solver.step(f, t, y, h, history)
        orders.append(step.order)
        t, y = t + h, step.y1
        history = solver.next_init(f, t, step)
    assert orders[0] == 1 and max(orders) >= 4, orders
    assert all(b - a <= 1 for a, b in zip(orders, orders[1:])), orders  # up one order at a time


def test_solve_stats_record_the_order_of_each_accepted_step():
    prob = PROBLEMS["linear"]()
    t = torch.linspace(0, 1, 3, dtype=prob.y0.dtype)
    odeint(prob, prob.y0, t, rtol=1e-8, atol=1e-8, method="adams")
    stats = last_stats()
    assert len(stats.orders) == stats.n_accepted > 10
    assert stats.orders[0] == 1 and max(stats.orders) >= 4  # it climbs from the first-order start
    assert all(b - a <= 1 for a, b in zip(stats.orders, stats.orders[1:]))
    odeint(prob, prob.y0, t, rtol=1e-8, atol=1e-8, method="dopri5")
    assert last_stats().orders == []  # a fixed-order method records none


def test_adams_restarts_its_history_at_a_jump():
    """After a jump_t the slopes from before it describe another field: the history restarts, and
    a piecewise-constant field is then integrated exactly."""
    def f(t, y):
        return (t >= 0.5).to(y.dtype) * torch.ones_like(y)

    t = torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=F64)
    ys = odeint(f, torch.zeros(1, dtype=F64), t, rtol=1e-6, atol=1e-6, method="adams", options=dict(jump_t=[0.5]))
    torch.testing.assert_close(ys, torch.tensor([[0.0], [0.0], [0.25], [0.5]], dtype=F64), rtol=0, atol=1e-12)


def test_adams_event_time():
    def fall(t, y):
        return torch.stack([y[1], torch.full_like(y[1], -9.81)])

    t_event, _ = odeint_event(fall, torch.tensor([10.0, 0.0], dtype=F64), torch.tensor(0.0, dtype=F64),
                              event_fn=lambda t, y: y[0], method="adams", rtol=1e-9, atol=1e-9)
    assert abs(t_event.item() - math.sqrt(20 / 9.81)) < 1e-9


# --------------------------------------------------------------------------- gradients


SETTINGS = {
    "explicit_adams": dict(options=dict(step_size=0.05, max_order=5)),
    "implicit_adams": dict(options=dict(step_size=0.05), rtol=1e-10, atol=1e-10),
    "adams": dict(rtol=1e-10, atol=1e-10),
}


def loss_and_grads(method, gradient, y0, extra=None):
    func = SmallField()
    y = y0.clone().requires_grad_(True)
    kwargs = dict(SETTINGS[method])
    if extra:
        kwargs["options"] = {**kwargs.get("options", {}), **extra}
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    ys = odeint(func, y, t, method=method, gradient=gradient, **kwargs)
    loss = (ys ** 2).sum() + ys[1, 0, 1]
    loss.backward()
    return loss.detach(), y.grad, [p.grad for p in func.parameters()]


Y0_BATCH = torch.tensor([[0.5, -0.3], [1.0, 0.2]], dtype=F64)


@functools.lru_cache(maxsize=None)
def finite_differences(method):
    """Central differences of the loss in y0 (the same for every gradient strategy).

    The step balances the two errors: at 1e-6 the rounding of an adaptive solve at rtol 1e-10 (about
    1e-12 in the loss) already moved the quotient by 4e-6 on one CPU and not on another, while at
    1e-4 truncation and rounding both stay near 1e-8."""
    eps = 1e-4
    fd = torch.zeros(Y0_BATCH.numel(), dtype=F64)
    with torch.no_grad():
        for i in range(Y0_BATCH.numel()):
            e = torch.zeros(Y0_BATCH.numel(), dtype=F64)
            e[i] = eps
            e = e.view_as(Y0_BATCH)
            fd[i] = (_loss(method, Y0_BATCH + e) - _loss(method, Y0_BATCH - e)) / (2 * eps)
    return fd.view_as(Y0_BATCH)


def _loss(method, y0):
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    ys = odeint(SmallField(), y0, t, method=method, **SETTINGS[method])
    return (ys ** 2).sum() + ys[1, 0, 1]


@pytest.mark.parametrize("method", list(SETTINGS))
@pytest.mark.parametrize("gradient", ["direct", "checkpoint", "adjoint"])
def test_gradient_matches_finite_differences(method, gradient):
    _, grad, _ = loss_and_grads(method, gradient, Y0_BATCH)
    # adjoint: the continuous gradient, to the tolerance; direct/checkpoint: the discrete one
    torch.testing.assert_close(grad, finite_differences(method), rtol=1e-5 if gradient == "adjoint" else 1e-6,
                               atol=1e-7)


@pytest.mark.parametrize("method, extra", [("explicit_adams", None), ("implicit_adams", dict(checkpoint_every=3)),
                                           ("adams", None), ("adams", dict(checkpoint_every=2))])
def test_checkpoint_is_direct_to_rounding(method, extra):
    """The history crosses checkpoints: it is stored, and the gradient passes back through it."""
    direct = loss_and_grads(method, "direct", Y0_BATCH)
    checkpoint = loss_and_grads(method, "checkpoint", Y0_BATCH, extra)
    torch.testing.assert_close(checkpoint[0], direct[0], rtol=1e-13, atol=0)
    for a, b in zip([checkpoint[1], *checkpoint[2]], [direct[1], *direct[2]]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("adjoint_method, adjoint_options", [("adams", None), ("implicit_adams", dict(step_size=0.02)),
                                                             ("scipy_solver", dict(solver="DOP853"))])
def test_multistep_and_scipy_as_the_adjoints_backward_method(adjoint_method, adjoint_options):
    pytest.importorskip("scipy")
    func = SmallField()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    grads = {}
    for name in ("reference", adjoint_method):
        y = Y0_BATCH.clone().requires_grad_(True)
        if name == "reference":
            ys = odeint(func, y, t, rtol=1e-10, atol=1e-10)
        else:
            ys = odeint(func, y, t, rtol=1e-10, atol=1e-10, method="adams", gradient="adjoint",
                        adjoint_method=adjoint_method, adjoint_options=adjoint_options)
        grads[name] = torch.autograd.grad(ys[-1].pow(2).sum(), (y, *func.parameters()))
    for a, b in zip(grads[adjoint_method], grads["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize("method, options, match", [
    ("explicit_adams", dict(max_order=13), "max_order.*integer in \\[1, 12\\]"),
    ("implicit_adams", dict(max_order=0), "max_order"),
    ("implicit_adams", dict(max_iters=0), "max_iters"),
    ("fixed_adams", dict(max_iters=2.5), "max_iters"),
    ("explicit_adams", dict(max_iters=3), "unknown option.*max_iters"),
    ("adams", dict(max_order=1), "max_order.*\\[2, 12\\]"),
    ("adams", dict(step_size=0.1), "unknown option.*step_size"),
    ("scipy_solver", dict(solver="Euler"), "solver.*LSODA"),
])
def test_bad_options_are_refused_by_name(method, options, match):
    with pytest.raises(InvalidOptionError, match=match):
        odeint(oscillator, Y0, T9, method=method, options=dict(options, **({} if method in ("adams", "scipy_solver")
                                                                          else {"step_size": 0.1})))


def test_max_order_below_four_warns_and_is_rk4():
    with pytest.warns(UserWarning, match="reduces to rk4"):
        odeint(oscillator, Y0, T9, method="implicit_adams", options=dict(step_size=0.1, max_order=3))


# --------------------------------------------------------------------------- scipy_solver
@pytest.mark.parametrize("solver", ["LSODA", "RK45", "DOP853", "Radau", "BDF"])
def test_scipy_solver_gives_solve_ivps_results(solver):
    np = pytest.importorskip("numpy")
    solve_ivp = pytest.importorskip("scipy.integrate").solve_ivp

    def numpy_field(t, y):
        return np.array([y[1], -y[0]]) * (1 + 0.1 * t)

    expected = solve_ivp(numpy_field, (0.0, 2.0), Y0.numpy(), method=solver, t_eval=T9.numpy(), rtol=1e-8, atol=1e-8)
    ours = odeint(oscillator, Y0, T9, method="scipy_solver", options=dict(solver=solver), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(ours, torch.tensor(expected.y.T), rtol=1e-12, atol=1e-13)
    # and one evaluation to check func's output; Radau and BDF also estimate Jacobians by differences
    if solver in ("Radau", "BDF"):
        assert last_stats().nfe > expected.nfev + 1
    else:
        assert last_stats().nfe == expected.nfev + 1


def test_scipy_solver_reversed_time_and_float32():
    pytest.importorskip("scipy")
    t = torch.linspace(2.0, 0.0, 5, dtype=F64)
    ours = odeint(oscillator, Y0, t, method="scipy_solver", rtol=1e-10, atol=1e-10)
    reference = odeint(oscillator, Y0, t, method="dopri8", rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-7)
    y32 = odeint(oscillator, Y0.float(), t.float(), method="scipy_solver", rtol=1e-6, atol=1e-6)
    assert y32.dtype == torch.float32


def test_scipy_solver_refuses_gradients_through_it():
    pytest.importorskip("scipy")
    y = Y0.clone().requires_grad_(True)
    for gradient in ("direct", "checkpoint"):
        with pytest.raises(InvalidOptionError, match="passes no gradient.*gradient='adjoint'"):
            odeint(oscillator, y, T9, method="scipy_solver", gradient=gradient, adjoint_params=())
    # Under the default gradient torchdiffeq returns the solution as constants: so do we, warning.
    func = SmallField()  # its parameters require grad
    with pytest.warns(UserWarning, match="passes no gradient through the solver.*gradient='adjoint'"):
        ys = odeint(func, Y0_BATCH, T9, method="scipy_solver")
    assert not ys.requires_grad and all(p.grad is None for p in func.parameters())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        odeint(SmallField(), Y0_BATCH, T9, method="scipy_solver")
    # by the adjoint, with scipy forward and backward
    func = SmallField()
    y = Y0_BATCH.clone().requires_grad_(True)
    ys = odeint(func, y, torch.tensor([0.0, 1.0], dtype=F64), method="scipy_solver", gradient="adjoint",
                rtol=1e-10, atol=1e-10, options=dict(solver="DOP853"))
    ys[-1].pow(2).sum().backward()
    y_ref = Y0_BATCH.clone().requires_grad_(True)
    odeint(func, y_ref, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-10, atol=1e-10)[-1].pow(2).sum().backward()
    torch.testing.assert_close(y.grad, y_ref.grad, rtol=1e-6, atol=1e-8)


def test_scipy_solver_without_scipy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.integrate", None)  # import scipy.integrate now fails
    with pytest.raises(ImportError, match=r"pip install -e '\.\[scipy\]'"):
        odeint(oscillator, Y0, T9, method="scipy_solver")


def test_scipy_solver_refuses_events():
    pytest.importorskip("scipy")
    with pytest.raises(InvalidOptionError, match="event"):
        odeint(oscillator, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="scipy_solver",
               event_fn=lambda t, y: y[0] - 0.5)
