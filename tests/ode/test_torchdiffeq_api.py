"""torchdiffeq's public behaviour, as a torchdiffeq user relies on it, run twice over.

Every test takes the ``ode`` fixture: once it is torchdiffeq itself (those runs prove the tests
are right), once it is ``neuralode.ode`` (what we ship as a drop-in replacement: change one
import). Only ``odeint``, ``odeint_adjoint`` and ``odeint_event`` are used. Results are checked
against exact solutions; the one place two solves are compared is the adjoint against direct
backpropagation on an MLP field, which has no closed form.

Where neuralode.ode deliberately differs from torchdiffeq, the behaviour is not tested here.
"""

import importlib
import math

import pytest
import torch
from torch import nn

F64 = torch.float64
G = 9.81

ADAPTIVE = ["dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun"]
FIXED = ["euler", "midpoint", "heun2", "heun3", "rk4"]
FIXED_ORDER = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}

# (rtol = atol, bound on the max error over t = linspace(0, 1, 5)). The bound leaves about 10x
# room over torchdiffeq's own error, which for the lower orders and dopri8 (whose dense output
# is of lower order than its steps) is dominated by the interpolation between steps. The low
# orders get looser tolerances so each solve stays well under a second.
ADAPTIVE_ACCURACY = {
    "dopri8": (1e-8, 5e-5),
    "dopri5": (1e-8, 1e-6),
    "bosh3": (1e-8, 5e-5),
    "fehlberg2": (1e-7, 1e-4),
    "adaptive_heun": (1e-5, 1e-4),
}


@pytest.fixture(params=["torchdiffeq", "neuralode.ode"])
def ode(request):
    """The module under test: anything exposing odeint, odeint_adjoint and odeint_event.

    torchdiffeq is an optional (dev) dependency, so its runs are skipped without it; what we ship
    is imported plainly, so that an import error in it fails rather than skips."""
    if request.param == "torchdiffeq":
        return pytest.importorskip(request.param)
    return importlib.import_module(request.param)


# --------------------------------------------------------------------------------------------
# Problems with exact solutions
# --------------------------------------------------------------------------------------------

class Decay(nn.Module):
    """y' = -k y, so y(t) = y(t0) exp(-k (t - t0)); k is a parameter when trainable."""

    def __init__(self, k=1.0, trainable=False):
        super().__init__()
        k = torch.tensor(k, dtype=F64)
        if trainable:
            self.k = nn.Parameter(k)
        else:
            self.register_buffer("k", k)

    def forward(self, t, y):
        return -self.k.to(y.dtype) * y


def decay_exact(y0, t, t0=0.0, k=1.0):
    return y0 * torch.exp(-k * (t - t0)).to(y0.dtype).reshape(-1, *([1] * y0.dim()))


ROT = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)


def rotation(t, y):
    """y' = A y with A a rotation generator: y0 = (1, 0) gives y = (cos t, -sin t)."""
    return y @ ROT.T.to(y.dtype)


def rotation_exact(t):
    return torch.stack([torch.cos(t), -torch.sin(t)], dim=-1)


PROBLEMS = {
    "decay": (lambda t, y: -y, torch.tensor([1.0, -0.5], dtype=F64),
              lambda t: decay_exact(torch.tensor([1.0, -0.5], dtype=F64), t)),
    "rotation": (rotation, torch.tensor([1.0, 0.0], dtype=F64), rotation_exact),
}


def step_at_half(closed_right):
    """f = 0 before t = 0.5 and 1 after, so y(1) = y(0) + 0.5 exactly. ``closed_right``: f(0.5)
    is 1 (right-continuous); otherwise f(0.5) is 0 (left-continuous)."""

    def f(t, y):
        on = (t >= 0.5) if closed_right else (t > 0.5)
        return on.to(y.dtype) * torch.ones_like(y)

    return f


class StepRecorder(nn.Module):
    """y' = -y, recording callback_step (and its _adjoint twin) as (name, t0, dt) and the y0
    passed. Only the callbacks fixed-step methods support, so torchdiffeq does not warn."""

    def __init__(self, field=None):
        super().__init__()
        self.field = field
        self.events = []
        self.y0_seen = []

    def forward(self, t, y):
        if self.field is not None:
            return self.field(t, y)
        return -y

    def _record(self, name, t0, y0, dt):
        self.events.append((name, float(t0), float(dt)))
        self.y0_seen.append(y0)

    def callback_step(self, t0, y0, dt):
        self._record("step", t0, y0, dt)

    def callback_step_adjoint(self, t0, y0, dt):
        self.events.append(("step_adjoint", float(t0), float(dt)))

    def of(self, name):
        return [(t0, dt) for n, t0, dt in self.events if n == name]


class Recorder(StepRecorder):
    """StepRecorder plus the accept/reject callbacks of adaptive methods."""

    def callback_accept_step(self, t0, y0, dt):
        self._record("accept", t0, y0, dt)

    def callback_reject_step(self, t0, y0, dt):
        self._record("reject", t0, y0, dt)

    def callback_accept_step_adjoint(self, t0, y0, dt):
        self.events.append(("accept_adjoint", float(t0), float(dt)))

    def callback_reject_step_adjoint(self, t0, y0, dt):
        self.events.append(("reject_adjoint", float(t0), float(dt)))


def max_err(a, b):
    return (a - b).abs().max().item()


T5 = torch.linspace(0.0, 1.0, 5, dtype=F64)


# --------------------------------------------------------------------------------------------
# 1. Every method
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_method_accuracy(ode, method, problem):
    f, y0, exact = PROBLEMS[problem]
    tol, bound = ADAPTIVE_ACCURACY[method]
    ys = ode.odeint(f, y0, T5, rtol=tol, atol=tol, method=method)
    assert ys.shape == (5, *y0.shape) and ys.dtype == F64
    assert torch.equal(ys[0], y0)
    assert max_err(ys, exact(T5)) < bound


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("method", FIXED)
def test_fixed_method_accuracy_matches_order(ode, method, problem):
    f, y0, exact = PROBLEMS[problem]
    h = 0.01
    ys = ode.odeint(f, y0, T5, method=method, options=dict(step_size=h))
    assert ys.shape == (5, *y0.shape) and ys.dtype == F64
    assert torch.equal(ys[0], y0)
    # global error is O(h^order) with a constant below 1 on these problems over [0, 1]
    assert max_err(ys, exact(T5)) < h ** FIXED_ORDER[method]


# explicit_adams at max_order=5 is AB4: at its default max_order=12 (AB11) it is unstable at this step.
ADAMS = {"explicit_adams": dict(max_order=5), "implicit_adams": {}, "fixed_adams": {}}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("method", sorted(ADAMS))
def test_fixed_adams_accuracy(ode, method, problem):
    f, y0, exact = PROBLEMS[problem]
    h = 0.01
    ys = ode.odeint(f, y0, T5, method=method, options=dict(step_size=h, **ADAMS[method]))
    assert ys.shape == (5, *y0.shape) and ys.dtype == F64
    assert torch.equal(ys[0], y0)
    assert max_err(ys, exact(T5)) < h ** 4  # fourth order at least (the start-up caps it at 4 or 5)


@pytest.mark.filterwarnings("ignore:The following arguments have no effect")  # torchdiffeq passes min_step to all
@pytest.mark.parametrize("solver", ["LSODA", "RK45", "DOP853"])
def test_scipy_solver_accuracy(ode, solver):
    pytest.importorskip("scipy")
    f, y0, exact = PROBLEMS["rotation"]
    ys = ode.odeint(f, y0, T5, rtol=1e-9, atol=1e-9, method="scipy_solver", options=dict(solver=solver))
    assert ys.shape == (5, *y0.shape) and ys.dtype == F64
    assert max_err(ys, exact(T5)) < 1e-6


def test_method_none_is_dopri5(ode):
    f, y0, exact = PROBLEMS["decay"]
    default = ode.odeint(f, y0, T5, rtol=1e-8, atol=1e-8)
    none = ode.odeint(f, y0, T5, rtol=1e-8, atol=1e-8, method=None)
    dopri5 = ode.odeint(f, y0, T5, rtol=1e-8, atol=1e-8, method="dopri5")
    assert torch.equal(default, dopri5) and torch.equal(none, dopri5)
    assert max_err(dopri5, exact(T5)) < 1e-6


# --------------------------------------------------------------------------------------------
# 2. Time and state layouts
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, options", [("dopri5", None), ("rk4", dict(step_size=0.01))])
def test_decreasing_time(ode, method, options):
    y1 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.linspace(1.0, 0.0, 5, dtype=F64)
    ys = ode.odeint(lambda t, y: -y, y1, t, rtol=1e-8, atol=1e-8, method=method, options=options)
    assert ys.shape == (5, 2)
    assert max_err(ys, decay_exact(y1, t, t0=1.0)) < 1e-6


@pytest.mark.parametrize("method, options", [("dopri5", None), ("rk4", dict(step_size=0.1))])
def test_single_time_returns_y0_stacked(ode, method, options):
    y0 = torch.tensor([[1.0, 2.0, 3.0]], dtype=F64)
    ys = ode.odeint(lambda t, y: -y, y0, torch.tensor([0.3], dtype=F64), method=method, options=options)
    assert ys.shape == (1, 1, 3)
    assert torch.equal(ys[0], y0)


def tuple_field(t, state):
    a, b = state
    return -a, -2.0 * b


TUPLE_Y0 = (torch.tensor([1.0, -2.0], dtype=F64), torch.arange(6, dtype=F64).reshape(3, 2))


@pytest.mark.parametrize("method, options", [("dopri5", None), ("rk4", dict(step_size=0.01))])
def test_tuple_state(ode, method, options):
    a0, b0 = TUPLE_Y0
    out = ode.odeint(tuple_field, TUPLE_Y0, T5, rtol=1e-8, atol=1e-8, method=method, options=options)
    assert isinstance(out, tuple) and len(out) == 2
    a, b = out
    assert a.shape == (5, 2) and b.shape == (5, 3, 2)
    assert max_err(a, decay_exact(a0, T5)) < 1e-6
    assert max_err(b, decay_exact(b0, T5, k=2.0)) < 1e-6


def test_tuple_tolerances_per_component(ode):
    a0, b0 = TUPLE_Y0
    a, b = ode.odeint(tuple_field, TUPLE_Y0, T5, rtol=(1e-10, 1e-3), atol=(1e-10, 1e-3))
    # the tight tolerance on the first component is honoured whatever the second's
    assert max_err(a, decay_exact(a0, T5)) < 1e-7
    assert max_err(b, decay_exact(b0, T5, k=2.0)) < 5e-2


@pytest.mark.parametrize("method, options", [("dopri5", None), ("rk4", dict(step_size=0.01))])
def test_float32_state_with_float64_time(ode, method, options):
    y0 = torch.tensor([1.0, -0.5], dtype=torch.float32)
    ys = ode.odeint(lambda t, y: -y, y0, T5, rtol=1e-6, atol=1e-6, method=method, options=options)
    assert ys.dtype == torch.float32 and ys.shape == (5, 2)
    assert max_err(ys.double(), decay_exact(y0.double(), T5)) < 2e-5


# --------------------------------------------------------------------------------------------
# 3. Options
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dopri8", "dopri5", "bosh3"])
def test_default_min_max_step_accepted(ode, method):
    f, y0, exact = PROBLEMS["decay"]
    ys = ode.odeint(f, y0, T5, rtol=1e-8, atol=1e-8, method=method,
                    options=dict(min_step=0, max_step=float("inf")))
    assert max_err(ys, exact(T5)) < 5e-5


def test_max_step_bounds_accepted_steps(ode):
    rec = Recorder()
    ys = ode.odeint(rec, torch.tensor([1.0], dtype=F64), T5, rtol=1e-3, atol=1e-3,
                    method="dopri5", options=dict(max_step=0.05))
    accepted = rec.of("accept")
    assert len(accepted) >= 20
    assert all(dt <= 0.05 + 1e-12 for _, dt in accepted)
    assert max_err(ys, decay_exact(torch.tensor([1.0], dtype=F64), T5)) < 1e-3


def test_first_step(ode):
    rec = Recorder()
    ys = ode.odeint(rec, torch.tensor([1.0], dtype=F64), T5, rtol=1e-8, atol=1e-8,
                    method="dopri5", options=dict(first_step=1e-3))
    steps = rec.of("step")
    assert steps[0] == pytest.approx((0.0, 1e-3), abs=1e-15)
    assert rec.of("accept")[0][0] == 0.0
    assert max_err(ys, decay_exact(torch.tensor([1.0], dtype=F64), T5)) < 1e-6


def test_max_num_steps(ode):
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises((AssertionError, RuntimeError)):
        ode.odeint(lambda t, y: -y, y0, t, rtol=1e-10, atol=1e-10, options=dict(max_num_steps=3))
    # a generous limit is not in the way
    ys = ode.odeint(lambda t, y: -y, y0, t, rtol=1e-10, atol=1e-10, options=dict(max_num_steps=10_000))
    assert abs(ys[-1].item() - math.exp(-1)) < 1e-8


def test_step_t_forces_step_boundaries(ode):
    rec = Recorder()
    step_t = torch.tensor([0.3, 0.7], dtype=F64)
    y0 = torch.tensor([1.0], dtype=F64)
    ys = ode.odeint(rec, y0, T5, rtol=1e-2, atol=1e-2, method="dopri5", options=dict(step_t=step_t))
    ends = [t0 + dt for t0, dt in rec.of("accept")]
    for s in step_t.tolist():
        assert min(abs(e - s) for e in ends) < 1e-12, (s, ends)
    assert max_err(ys, decay_exact(y0, T5)) < 1e-2


@pytest.mark.parametrize("backwards", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("closed_right", [True, False], ids=["f(0.5)=1", "f(0.5)=0"])
def test_jump_t_at_discontinuity(ode, closed_right, backwards):
    f = step_at_half(closed_right)
    y0 = torch.zeros(1, dtype=F64)
    jump_t = torch.tensor([0.5], dtype=F64)
    t = torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=F64)
    exact = torch.tensor([0.0, 0.0, 0.25, 0.5], dtype=F64)[:, None]
    if backwards:
        t, exact = t.flip(0), exact.flip(0) - 0.5
        y0 = y0 + exact[0]
    ys = ode.odeint(f, y0, t, rtol=1e-6, atol=1e-6, method="dopri5", options=dict(jump_t=jump_t))
    # f is constant on each side of the jump, so stepping onto it (and evaluating f on the correct
    # side there) makes every step exact; stepping across it costs ~1e-4 at this tolerance
    assert max_err(ys, exact) < 1e-10


class CountedKink(nn.Module):
    """y' = -y/2 before t = 0.5, y^2 after: a field (and so an adjoint field) that jumps at 0.5."""

    nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return -0.5 * y if t < 0.5 else y ** 2


def test_jump_t_applies_to_the_adjoints_backward_solve(ode):
    """The backward solve retraces the same times, so it steps onto the jump too (the forward's
    options are its options when adjoint_options is not given): fewer evaluations both ways."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    counts = {}
    for jump in (True, False):
        f, y0 = CountedKink(), torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
        options = dict(jump_t=torch.tensor([0.5], dtype=F64)) if jump else {}
        ys = ode.odeint_adjoint(f, y0, t, method="dopri5", options=options, adjoint_params=())
        forward = f.nfe
        ys.sum().backward()
        counts[jump] = (forward, f.nfe - forward)
    assert counts[True][0] < counts[False][0] and counts[True][1] < counts[False][1], counts


def test_grid_constructor_applies_to_the_adjoints_backward_solve(ode):
    """Euler on the grid 0, 0.3, 0.9, 1 of y' = y, and back on the same grid: the adjoint of the
    discrete forward solve, dy1/dy0 = 1.3 * 1.6 * 1.1 (one Euler step over [0, 1] would give 2)."""
    calls = []

    def grid(func, y0, t):
        calls.append(t.tolist())
        return torch.tensor([0.0, 0.3, 0.9, 1.0], dtype=F64) if t[0] < t[-1] else torch.tensor([1.0, 0.9, 0.3, 0.0], dtype=F64)

    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    ys = ode.odeint_adjoint(lambda t, y: y, y0, torch.tensor([0.0, 1.0], dtype=F64), method="euler",
                            options=dict(grid_constructor=grid), adjoint_params=())
    ys[-1].sum().backward()
    assert ys[-1].item() == pytest.approx(1.3 * 1.6 * 1.1, abs=1e-12)
    assert y0.grad.item() == pytest.approx(1.3 * 1.6 * 1.1, abs=1e-12)
    assert len(calls) == 2 and calls[1][0] > calls[1][-1]  # the backward solve asked for its own grid


@pytest.mark.parametrize("closed_right", [True, False], ids=["f(0.5)=1", "f(0.5)=0"])
@pytest.mark.parametrize("method", FIXED)
def test_fixed_perturb_at_grid_discontinuity(ode, method, closed_right):
    # the grid 0, 0.25, 0.5, 0.75, 1 hits 0.5: with perturb, a step starting at 0.5 sees the value
    # on its right and a step ending there sees the value on its left, so the result is exact
    f = step_at_half(closed_right)
    ys = ode.odeint(f, torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method=method,
                    options=dict(step_size=0.25, perturb=True))
    assert abs(ys[-1].item() - 0.5) < 1e-12


@pytest.mark.parametrize("method", FIXED)
def test_grid_constructor(ode, method):
    rec = StepRecorder()
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    grid = lambda func, y0, t: torch.linspace(t[0], t[-1], 11, dtype=t.dtype)  # noqa: E731
    ys = ode.odeint(rec, y0, t, method=method, options=dict(grid_constructor=grid))
    steps = rec.of("step")
    assert len(steps) == 10
    assert all(dt == pytest.approx(0.1, abs=1e-12) for _, dt in steps)
    assert [t0 for t0, _ in steps] == pytest.approx([i / 10 for i in range(10)], abs=1e-12)
    assert max_err(ys, decay_exact(y0, t)) < 0.1 ** FIXED_ORDER[method]


def test_fixed_interp_linear_and_cubic(ode):
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 0.05, 0.35, 0.65, 0.95, 1.0], dtype=F64)  # mostly off the 0.1 grid
    errs = {}
    for interp in ["linear", "cubic"]:
        ys = ode.odeint(lambda t, y: -y, y0, t, method="rk4", options=dict(step_size=0.1, interp=interp))
        assert ys.shape == (6, 1)
        errs[interp] = max_err(ys, decay_exact(y0, t))
    assert errs["linear"] < 2e-3
    assert errs["cubic"] < 1e-5
    assert errs["cubic"] < errs["linear"] / 10


def test_norm_receives_tensor_for_tensor_state(ode):
    seen = []

    def rms(x):
        seen.append(x)
        return x.pow(2).mean().sqrt()

    y0 = torch.tensor([[1.0, -0.5]], dtype=F64)
    ys = ode.odeint(lambda t, y: -y, y0, T5, rtol=1e-8, atol=1e-8, options=dict(norm=rms))
    assert seen
    assert all(isinstance(x, torch.Tensor) and x.shape == y0.shape for x in seen)
    assert max_err(ys, decay_exact(y0, T5)) < 1e-6


def test_norm_receives_tuple_for_tuple_state(ode):
    seen = []

    def mixed_rms(xs):
        seen.append(xs)
        return torch.stack([x.pow(2).mean().sqrt() for x in xs]).max()

    a0, b0 = TUPLE_Y0
    a, b = ode.odeint(tuple_field, TUPLE_Y0, T5, rtol=1e-8, atol=1e-8, options=dict(norm=mixed_rms))
    assert seen
    for xs in seen:
        assert isinstance(xs, tuple) and len(xs) == 2
        assert all(isinstance(x, torch.Tensor) for x in xs)
        assert xs[0].shape == a0.shape and xs[1].shape == b0.shape
    assert max_err(a, decay_exact(a0, T5)) < 1e-6
    assert max_err(b, decay_exact(b0, T5, k=2.0)) < 1e-6


def test_dtype_option(ode):
    y0 = torch.tensor([1.0, -0.5], dtype=torch.float32)
    ys = ode.odeint(lambda t, y: -y, y0, T5.float(), rtol=1e-6, atol=1e-6, options=dict(dtype=F64))
    assert ys.dtype == torch.float32
    assert max_err(ys.double(), decay_exact(y0.double(), T5)) < 2e-5


# --------------------------------------------------------------------------------------------
# 4. Callbacks
# --------------------------------------------------------------------------------------------

def test_adaptive_callbacks(ode):
    rec = Recorder()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    # a first step of the whole interval is far too big at this tolerance, so it is rejected
    ode.odeint(rec, torch.tensor([1.0], dtype=F64), t, rtol=1e-8, atol=1e-8, method="dopri5",
               options=dict(first_step=1.0))
    steps, accepts, rejects = rec.of("step"), rec.of("accept"), rec.of("reject")
    assert len(steps) == len(accepts) + len(rejects)
    assert len(accepts) >= 1 and len(rejects) >= 1
    assert steps[0] == pytest.approx((0.0, 1.0))
    # accepted steps tile [0, 1]: each starts where the last ended, the last reaches t1
    assert accepts[0][0] == 0.0
    for (t0, dt), (t0_next, _) in zip(accepts, accepts[1:]):
        assert t0_next == pytest.approx(t0 + dt, abs=1e-12)
    last_t0, last_dt = accepts[-1]
    assert last_t0 < 1.0 <= last_t0 + last_dt + 1e-12
    assert all(dt > 0 for _, dt in accepts + rejects)


def test_callbacks_receive_tuple_state(ode):
    rec = Recorder(field=tuple_field)
    ode.odeint(rec, TUPLE_Y0, T5, rtol=1e-6, atol=1e-6)
    assert rec.y0_seen
    for y in rec.y0_seen:
        assert isinstance(y, tuple) and len(y) == 2
        assert y[0].shape == (2,) and y[1].shape == (3, 2)


@pytest.mark.parametrize("method", FIXED)
def test_fixed_callback_once_per_step(ode, method):
    rec = StepRecorder()
    ode.odeint(rec, torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method=method,
               options=dict(step_size=0.1))
    steps = rec.of("step")
    assert len(steps) == 10
    assert all(dt == pytest.approx(0.1, abs=1e-12) for _, dt in steps)


@pytest.mark.parametrize("method, options", [("dopri5", None), ("rk4", dict(step_size=0.1))])
def test_adjoint_callbacks_called_in_backward(ode, method, options):
    rec = StepRecorder() if options else Recorder()
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    ys = ode.odeint_adjoint(rec, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-6, atol=1e-6,
                            method=method, options=options, adjoint_params=())
    forward_events = list(rec.events)
    assert forward_events and not [e for e in forward_events if e[0].endswith("_adjoint")]
    ys[-1].sum().backward()
    backward_events = rec.events[len(forward_events):]
    # the backward pass calls the _adjoint callbacks only
    assert backward_events and all(name.endswith("_adjoint") for name, _, _ in backward_events)
    steps = rec.of("step_adjoint")
    if method == "rk4":
        assert len(steps) == 10
    else:
        assert len(steps) == len(rec.of("accept_adjoint")) + len(rec.of("reject_adjoint"))
        assert len(rec.of("accept_adjoint")) >= 1
    assert y0.grad.item() == pytest.approx(math.exp(-1), rel=1e-5)


# --------------------------------------------------------------------------------------------
# 5. Events
# --------------------------------------------------------------------------------------------

class FallingBall(nn.Module):
    """State (height, velocity); gravity only, no bounce."""

    def forward(self, t, y):
        return torch.stack([y[1], torch.full_like(y[1], -G)])


def height(t, y):
    return y[0]


def ball_y0(h0=1.0):
    return torch.tensor([h0, 0.0], dtype=F64, requires_grad=True)


T0 = torch.tensor(0.0, dtype=F64)
EVENT_TOL = dict(rtol=1e-8, atol=1e-8)


def test_event_time_and_state(ode):
    y0 = ball_y0()
    event_t, sol = ode.odeint_event(FallingBall(), y0, T0, event_fn=height, **EVENT_TOL)
    t_hit = math.sqrt(2 * 1.0 / G)
    assert event_t.item() == pytest.approx(t_hit, abs=1e-5)
    assert torch.equal(sol[0].detach(), y0.detach())
    assert sol[-1][0].item() == pytest.approx(0.0, abs=1e-5)
    assert sol[-1][1].item() == pytest.approx(-G * t_hit, abs=1e-4)


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_event_time_gradient(ode, interface):
    h0 = 1.0
    y0 = ball_y0(h0)
    event_t, _ = ode.odeint_event(FallingBall(), y0, T0, event_fn=height,
                                  odeint_interface=getattr(ode, interface), **EVENT_TOL)
    event_t.backward()
    # h0 + v0 t - g t^2 / 2 = 0  =>  dt/dh0 = 1 / sqrt(2 g h0), dt/dv0 = 1 / g at v0 = 0
    expected = torch.tensor([1 / math.sqrt(2 * G * h0), 1 / G], dtype=F64)
    torch.testing.assert_close(y0.grad, expected, rtol=1e-5, atol=1e-7)


def test_event_reverse_time(ode):
    h0 = 1.0
    y0 = ball_y0(h0)
    event_t, sol = ode.odeint_event(FallingBall(), y0, T0, event_fn=height, reverse_time=True, **EVENT_TOL)
    # backwards in time the ball rises from the ground at t = -sqrt(2 h0 / g)
    t_hit = -math.sqrt(2 * h0 / G)
    assert event_t.item() == pytest.approx(t_hit, abs=1e-5)
    assert sol[-1][0].item() == pytest.approx(0.0, abs=1e-5)
    assert sol[-1][1].item() == pytest.approx(-G * t_hit, abs=1e-4)
    event_t.backward()
    expected = torch.tensor([-1 / math.sqrt(2 * G * h0), 1 / G], dtype=F64)
    torch.testing.assert_close(y0.grad, expected, rtol=1e-5, atol=1e-7)


def test_event_multivariate(ode):
    y0 = ball_y0()

    def event_fn(t, y):
        # starts negative, crosses zero at height 0.5; the second would cross later, at 0.25
        return torch.stack([0.5 - y[0], y[0] - 0.25])

    event_t, sol = ode.odeint_event(FallingBall(), y0, T0, event_fn=event_fn, **EVENT_TOL)
    assert event_t.item() == pytest.approx(math.sqrt(2 * 0.5 / G), abs=1e-5)
    assert sol[-1][0].item() == pytest.approx(0.5, abs=1e-5)


# --------------------------------------------------------------------------------------------
# 6. odeint_adjoint
# --------------------------------------------------------------------------------------------

class MLPField(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1 = nn.Linear(3, 8)
        self.l2 = nn.Linear(8, 2)

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(torch.cat([y, t.expand(*y.shape[:-1], 1)], -1))))


def _grads(solve, func, **kwargs):
    y0 = torch.tensor([[0.5, -0.3], [1.0, 0.2]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64, requires_grad=True)
    ys = solve(func, y0, t, rtol=1e-8, atol=1e-8, **kwargs)
    loss = (ys ** 2).sum() + ys[-1, :, 0].sum()
    return torch.autograd.grad(loss, [y0, t, *func.parameters()])


def test_adjoint_matches_direct_backprop(ode):
    func = MLPField().double()
    direct = _grads(ode.odeint, func)
    adjoint = _grads(ode.odeint_adjoint, func)
    for name, d, a in zip(["y0", "t", "l1.weight", "l1.bias", "l2.weight", "l2.bias"], direct, adjoint):
        torch.testing.assert_close(a, d, rtol=1e-4, atol=1e-6, msg=f"gradient w.r.t. {name}")


def test_adjoint_params_empty_with_plain_function(ode):
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ys = ode.odeint_adjoint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-8, atol=1e-8,
                            adjoint_params=())
    ys[-1].sum().backward()
    torch.testing.assert_close(y0.grad, torch.full_like(y0, math.exp(-1)), rtol=1e-6, atol=0)


@pytest.mark.parametrize("adjoint_options", [None, dict(norm="seminorm")], ids=["default", "seminorm"])
def test_adjoint_parameter_gradient_exact(ode, adjoint_options):
    k = 0.7
    func = Decay(k, trainable=True)
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ys = ode.odeint_adjoint(func, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-8, atol=1e-8,
                            adjoint_options=adjoint_options)
    ys[-1].sum().backward()
    # y(1) = y0 exp(-k): d/dy0 = exp(-k), d/dk = -y0 exp(-k)
    torch.testing.assert_close(y0.grad, torch.full_like(y0, math.exp(-k)), rtol=1e-6, atol=0)
    assert func.k.grad.item() == pytest.approx(-3.0 * math.exp(-k), rel=1e-6)


class TimeOnly(nn.Module):
    """y' = -0.1 exp(-0.1 t): depends on t only, no parameters. y(t) = y0 + exp(-0.1 t) - 1."""

    def forward(self, t, y):
        return -0.1 * torch.exp(-0.1 * t) * torch.ones_like(y)


@pytest.mark.parametrize("t_grad", [False, True], ids=["y0", "y0_and_t"])
def test_adjoint_field_independent_of_state(ode, t_grad):
    y0 = torch.tensor([1.0], requires_grad=True)
    t = torch.tensor([0.0, 1.0], requires_grad=t_grad)
    ys = ode.odeint_adjoint(TimeOnly(), y0, t)
    # L = y(1)^2 with y(1) = exp(-0.1): dL/dy0 = 2 y(1)
    y1 = math.exp(-0.1)
    assert ys[-1].item() == pytest.approx(y1, rel=1e-6)
    (ys[-1] ** 2).sum().backward()
    assert y0.grad.item() == pytest.approx(2 * y1, rel=1e-5)
    if t_grad:
        # dL/dt1 = 2 y(1) f(1),  dL/dt0 = -2 y(1) f(0)
        expected = [-2 * y1 * (-0.1), 2 * y1 * (-0.1 * math.exp(-0.1))]
        assert t.grad.tolist() == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------------------------
# 7. Errors
# --------------------------------------------------------------------------------------------

def test_unknown_method_raises_value_error(ode):
    with pytest.raises(ValueError):
        ode.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method="rk45")


def test_time_not_one_dimensional_raises(ode):
    with pytest.raises(Exception):
        ode.odeint(lambda t, y: -y, torch.ones(2), torch.linspace(0.0, 1.0, 4).reshape(2, 2))
