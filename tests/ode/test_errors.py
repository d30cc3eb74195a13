"""Each bad input or failing solve raises its named error with a useful message."""

import re

import pytest
import torch

from neuralode.ode import (
    AdjointParamsError,
    InvalidOptionError,
    InvalidTimeError,
    MaxStepsExceededError,
    NonFiniteStateError,
    ODESolverError,
    StateMismatchError,
    StepSizeUnderflowError,
    odeint,
    odeint_adjoint,
)

decay = lambda t, y: -y  # noqa: E731
T = torch.tensor([0.0, 1.0])


def test_unknown_method_lists_valid_ones():
    with pytest.raises(InvalidOptionError, match="unknown ODE method 'rk45'.*dopri5.*rk4"):
        odeint(decay, torch.ones(2), T, method="rk45")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(InvalidOptionError, match="'stepsize'.*valid options: step_size, grid"):
        odeint(decay, torch.ones(2), T, method="rk4", options={"stepsize": 0.1})
    with pytest.raises(InvalidOptionError, match="'step_size'.*max_num_steps"):
        odeint(decay, torch.ones(2), T, method="dopri5", options={"step_size": 0.1})


def test_seminorm_outside_adjoint_options_is_explained():
    with pytest.raises(InvalidOptionError, match="adjoint_options"):
        odeint(decay, torch.ones(2), T, options={"norm": "seminorm"})


@pytest.mark.parametrize("t, match", [
    (torch.tensor([[0.0, 1.0]]), "1-D"),
    (torch.tensor([0.0, 1.0, 0.5]), "strictly increasing or strictly decreasing"),
    (torch.tensor([0.0, 0.0, 1.0]), "strictly"),
    (torch.tensor([0.0, float("nan")]), "non-finite"),
    ([0.0, 1.0], "torch.Tensor"),
])
def test_bad_times(t, match):
    with pytest.raises(InvalidTimeError, match=match):
        odeint(decay, torch.ones(2), t)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_func_returning_wrong_shape_or_dtype(method):
    opts = {"step_size": 0.1} if method == "rk4" else None
    with pytest.raises(StateMismatchError, match=r"shape \(3,\).*state has shape \(2,\)"):
        odeint(lambda t, y: torch.ones(3), torch.ones(2), T, method=method, options=opts)
    with pytest.raises(StateMismatchError, match="dtype torch.float64"):
        odeint(lambda t, y: y.double(), torch.ones(2), T, method=method, options=opts)


def test_tuple_func_must_return_tuple():
    with pytest.raises(StateMismatchError, match="tuple of 2 tensors"):
        odeint(lambda t, s: s[0], (torch.ones(2), torch.ones(1)), T)


def test_nonfinite_state_names_time():
    blowup = lambda t, y: torch.where(t > 0.5, torch.full_like(y, float("nan")), -y)  # noqa: E731
    with pytest.raises(NonFiniteStateError, match=r"non-finite.*t=0\.5"):
        odeint(blowup, torch.ones(2), T)
    with pytest.raises(NonFiniteStateError, match=r"between t=0 and t=1 \(by step 10"):
        odeint(blowup, torch.ones(2), T, method="rk4", options={"step_size": 0.1})
    with pytest.raises(NonFiniteStateError, match="initial"):
        odeint(decay, torch.tensor([1.0, float("inf")]), T)


def test_step_size_underflow():
    # y' = y^2 from y(0) = 1 blows up at t = 1: the step shrinks to nothing before it.
    with pytest.raises(StepSizeUnderflowError, match=r"underflowed at t=(1|0\.99)"):
        odeint(lambda t, y: y * y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0]),
               rtol=1e-8, atol=1e-8, options={"max_num_steps": 10**6})


def test_max_num_steps():
    with pytest.raises(MaxStepsExceededError, match="max_num_steps=20"):
        odeint(lambda t, y: torch.cos(50 * t) * y, torch.ones(1), torch.tensor([0.0, 10.0]),
               rtol=1e-8, atol=1e-8, options={"max_num_steps": 20})


@pytest.mark.slow  # 36,000 steps: 3.5 s
def test_the_default_step_limit_does_not_stop_a_solve_that_ends():
    """torchdiffeq has no step limit; adaptive_heun in float32 at the default tolerances takes
    36,000 steps on this rotation, which the old default of 10,000 refused."""
    from neuralode.ode import last_stats

    A = torch.tensor([[-0.1, -2.0], [2.0, -0.1]])
    odeint(lambda t, y: y @ A.T, torch.tensor([[1.0, 0.5]]), torch.linspace(1, 8, 10), method="adaptive_heun")
    assert last_stats().n_accepted > 30_000


def test_adjoint_needs_parameters_for_plain_function():
    with pytest.raises(AdjointParamsError, match="adjoint_params"):
        odeint_adjoint(decay, torch.ones(2, requires_grad=True), T)
    # An explicit empty tuple is fine: gradients then reach y0 only.
    y0 = torch.ones(2, requires_grad=True)
    odeint_adjoint(decay, y0, T, adjoint_params=())[-1].sum().backward()
    torch.testing.assert_close(y0.grad, torch.full((2,), torch.exp(torch.tensor(-1.0)).item()), rtol=1e-5, atol=1e-6)


def test_bad_tolerances():
    with pytest.raises(InvalidOptionError, match="rtol"):
        odeint(decay, torch.ones(2), T, rtol=-1.0)
    with pytest.raises(InvalidOptionError, match="step_size"):
        odeint(decay, torch.ones(2), T, method="euler", options={"step_size": 0})


def test_all_errors_share_a_base_class():
    for err in (AdjointParamsError, InvalidOptionError, InvalidTimeError, MaxStepsExceededError,
                NonFiniteStateError, StateMismatchError, StepSizeUnderflowError):
        assert issubclass(err, ODESolverError)


def test_integer_state_rejected():
    with pytest.raises(StateMismatchError, match="floating-point"):
        odeint(decay, torch.ones(2, dtype=torch.long), T)


def test_an_incomplete_solver_fails_when_it_is_built_not_mid_solve():
    from neuralode.ode.solvers.base import Solver, check_complete
    from neuralode.ode.solvers.runge_kutta import ExplicitRungeKutta

    class NoStep(Solver):  # misses step, error_norm, interpolant
        name, adaptive, order, error_order = "nostep", False, 1, 1

        def init(self, field, t, y, perturb=0):
            return field(t, y)

        def next_init(self, field, t1, step, perturb=0):
            return field(t1, step.y1)

    with pytest.raises(TypeError, match="abstract.*step"):
        NoStep()

    class Nameless(ExplicitRungeKutta):
        def __init__(self):  # forgets the tableau's name, orders, ...
            pass

    with pytest.raises(TypeError, match="Nameless does not set name, adaptive, order, error_order"):
        check_complete(Nameless())
    with pytest.raises(TypeError, match="is not a neuralode.ode.solvers.base.Solver"):
        check_complete(object())


def test_a_fixed_step_method_without_a_grid_warns_naming_step_size():
    """One step between output times is torchdiffeq's behaviour, kept, but said: y(10) of y' = -y
    in one rk4 step is 291, not 4.5e-5."""
    with pytest.warns(UserWarning, match=r"'rk4' got neither options\['step_size'\] nor options\['grid_constructor'\]"):
        ys = odeint(lambda t, y: -y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 10.0], dtype=torch.float64),
                    method="rk4")
    assert ys[-1].item() == pytest.approx(291.0)


def test_a_tolerance_tensor_per_element_of_a_tensor_state():
    y0, t = torch.ones(3, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    per_element = odeint(lambda t, y: -y, y0, t, rtol=1e-8, atol=torch.full((3,), 1e-9, dtype=torch.float64))
    scalar = odeint(lambda t, y: -y, y0, t, rtol=1e-8, atol=1e-9)
    assert torch.equal(per_element, scalar)


def test_an_interrupted_solve_says_where_it_was():
    """Ctrl-C (KeyboardInterrupt) inside a long solve keeps its type and gains a note: the time,
    the span and the steps taken."""
    calls = 0

    def field(t, y):
        nonlocal calls
        calls += 1
        if calls == 60:
            raise KeyboardInterrupt
        return -y

    with pytest.raises(KeyboardInterrupt) as stopped:
        odeint(field, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 100.0], dtype=torch.float64))
    note = " ".join(getattr(stopped.value, "__notes__", []))
    assert re.search(r"interrupted inside an ODE solve at t=[\d.]+ of \[t=0, t=100\], after \d+ accepted steps of dopri5",
                     note), note


@pytest.mark.parametrize("options", [{}, {"per_sample": True}], ids=["host loop", "batched loop"])
def test_max_seconds_stops_a_long_solve_with_a_named_error(options):
    """Van der Pol at mu = 1000 with dopri5 takes minutes; options['max_seconds'] (off by default,
    as torchdiffeq has no limit) stops it and says where it was."""
    from neuralode.ode import TimeLimitError

    def vdp(t, y):
        return torch.stack([y[..., 1], 1000 * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], dim=-1)

    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    with pytest.raises(TimeLimitError, match=r"stopped after options\['max_seconds'\]=0.2 s of solving, at t=[\d.]+"):
        odeint(vdp, y0, torch.tensor([0.0, 3000.0], dtype=torch.float64), rtol=1e-8, atol=1e-8,
               options={"max_seconds": 0.2, **options})
    with pytest.raises(InvalidOptionError, match="option 'max_seconds' must be a positive finite number"):
        odeint(vdp, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), options={"max_seconds": -1})
