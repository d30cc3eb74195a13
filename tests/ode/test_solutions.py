"""Every method against problems with exact solutions."""

import pytest
import torch

from neuralode.ode import last_stats, odeint
from tests.helpers import slow_when
from tests.ode.problems import ALL_METHODS, FIXED, IMPLICIT_FIXED, LOW_ORDER, ORDER, PROBLEMS, expected_error, solver_kwargs

# `make test-fast`: these on every problem and dtype, and every other method on the float64 linear
# problem except the low-order ones (thousands of steps at these tolerances; an implicit one with a
# Newton solve per step: 1-3 s), of which euler and implicit_midpoint stand for the rest.
EVERYWHERE_IN_FAST = ("dopri5", "tsit5", "rk4", "dopri8")
LOW_ORDER_SAMPLE = ("euler", "implicit_midpoint")
COSTLY_LOW_ORDER = {m for m in FIXED if (ORDER[m] <= 2 or m in IMPLICIT_FIXED and ORDER[m] <= 3)
                    and m not in LOW_ORDER_SAMPLE} | set(LOW_ORDER)
EXACT_CASES = [
    slow_when(method not in EVERYWHERE_IN_FAST and (dtype != torch.float64 or problem != "linear" or method in COSTLY_LOW_ORDER),
              method, problem, dtype, id=f"{str(dtype)[6:]}-{problem}-{method}")
    for dtype in (torch.float64, torch.float32) for problem in sorted(PROBLEMS) for method in ALL_METHODS
]


@pytest.mark.parametrize("method, problem, dtype", EXACT_CASES)
def test_exact_solutions(method, problem, dtype):
    prob = PROBLEMS[problem](dtype)
    t = torch.linspace(0.0, 2.0, 5, dtype=dtype)
    ys = odeint(prob, prob.y0, t, method=method, **solver_kwargs(method, dtype))
    assert ys.shape == (len(t), *prob.y0.shape)
    assert ys.dtype == dtype
    torch.testing.assert_close(ys[0], prob.y0, rtol=0, atol=0)
    err = (ys - prob.exact(t)).abs().max().item()
    assert err < expected_error(method, dtype), f"{method} on {problem}: max error {err:.3g}"


@pytest.mark.parametrize("method", [slow_when(m in IMPLICIT_FIXED or m in COSTLY_LOW_ORDER, m, id=m) for m in ALL_METHODS])
def test_decreasing_time(method):
    prob = PROBLEMS["linear"]()
    t = torch.linspace(1.5, -0.5, 4, dtype=torch.float64)
    y_start = prob.exact(t[:1])[0]
    ys = odeint(prob, y_start, t, method=method, **solver_kwargs(method, torch.float64))
    err = (ys - prob.exact(t)).abs().max().item()
    assert err < expected_error(method, torch.float64)


@pytest.mark.parametrize("method", ["rk4", "dopri5", "tsit5", "bosh3", "dopri8"])
def test_tuple_state(method):
    """A tuple state is solved jointly and returned as a tuple of stacked tensors."""
    decay, rot = PROBLEMS["decay"](), PROBLEMS["rotation"]()
    t = torch.linspace(0.0, 1.0, 6, dtype=torch.float64)

    def f(t, state):
        a, b = state
        return decay(t, a), rot(t, b)

    ya, yb = odeint(f, (decay.y0, rot.y0), t, method=method, **solver_kwargs(method, torch.float64))
    assert ya.shape == (6, 3) and yb.shape == (6, 2)
    assert (ya - decay.exact(t)).abs().max() < expected_error(method, torch.float64)
    assert (yb - rot.exact(t)).abs().max() < expected_error(method, torch.float64)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8"])
def test_many_output_times_do_not_shorten_steps(method):
    """Outputs come from the dense interpolant: 2 or 400 output times take the same steps."""
    prob = PROBLEMS["linear"]()
    kwargs = dict(method=method, rtol=1e-6, atol=1e-6)
    odeint(prob, prob.y0, torch.tensor([0.0, 3.0], dtype=torch.float64), **kwargs)
    few = last_stats()
    t = torch.linspace(0.0, 3.0, 400, dtype=torch.float64)
    ys = odeint(prob, prob.y0, t, **kwargs)
    many = last_stats()
    assert many.n_accepted == few.n_accepted
    # dopri5/tsit5/bosh3 interpolate for free; dopri8's 7th-order interpolant costs
    # f(t1, y1) plus three stages in each step that holds an output.
    extra = 4 * many.n_accepted if method == "dopri8" else 1
    assert many.nfe <= few.nfe + extra
    assert (ys - prob.exact(t)).abs().max() < 1e-4


def test_batch_dimensions_and_single_time():
    prob = PROBLEMS["decay"]()
    y0 = prob.y0.expand(4, 5, 3).clone()
    ys = odeint(prob, y0, torch.tensor([0.0, 1.0]))
    assert ys.shape == (2, 4, 5, 3)
    only = odeint(prob, y0, torch.tensor([0.3]))
    assert only.shape == (1, 4, 5, 3) and torch.equal(only[0], y0)


def test_time_passed_to_func_has_state_dtype():
    seen = []

    def f(t, y):
        seen.append((t.dtype, t.dim(), t.device))
        return -y

    odeint(f, torch.ones(3, dtype=torch.float32), torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert set(seen) == {(torch.float32, 0, torch.device("cpu"))}


def test_time_far_from_zero_keeps_float64_precision():
    """A float32 state over [1e4, 1e4 + 1]: internal times stay float64, so steps are not lost."""
    prob = PROBLEMS["decay"](torch.float32)
    t = torch.tensor([1e4, 1e4 + 1.0], dtype=torch.float64)
    ys = odeint(prob, prob.y0, t, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ys[-1], prob.y0 * torch.exp(-prob.k), rtol=1e-4, atol=1e-5)
