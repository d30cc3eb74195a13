"""The three gradient strategies agree with each other and with finite differences; the
checkpointed one keeps O(sqrt(steps)) states; events pass gradients through the event time."""

import functools
import math

import pytest
import torch
from torch import nn

from neuralode.ode import GRADIENTS, InvalidOptionError, collect_stats, odeint, odeint_event
from neuralode.ode.checkpoint import Checkpoints
from neuralode.ode.loop import AcceptedStep
from tests.ode.problems import SmallField




def gradients(gradient, method="dopri5", options=None, tol=1e-3):
    func = SmallField()
    y0 = torch.tensor([[0.5, -0.3], [1.0, 0.2]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.2], dtype=torch.float64, requires_grad=True)
    ys = odeint(func, y0, t, method=method, rtol=tol, atol=tol, options=options, gradient=gradient)
    loss = (ys ** 2).sum() + ys[1, 0, 1]
    loss.backward()
    return loss.detach(), y0.grad, t.grad, [p.grad for p in func.parameters()]


@pytest.mark.parametrize("method, options", [("dopri5", None), ("bosh3", None), ("rk4", {"step_size": 0.1}),
                                             ("dopri8", None), ("rk4", {"step_size": 0.3, "interp": "cubic"})])
def test_checkpoint_is_the_exact_gradient_of_the_discrete_solve(method, options):
    """Same steps, same arithmetic: checkpoint and direct agree to rounding, at a loose tolerance."""
    direct, checkpoint = gradients("direct", method, options), gradients("checkpoint", method, options)
    torch.testing.assert_close(checkpoint[0], direct[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(checkpoint[1:3] + tuple(checkpoint[3]), direct[1:3] + tuple(direct[3])):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_adjoint_agrees_with_direct_to_the_tolerance():
    direct, adjoint = gradients("direct", tol=1e-9), gradients("adjoint", tol=1e-9)
    for a, b in zip(adjoint[1:3] + tuple(adjoint[3]), direct[1:3] + tuple(direct[3])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_gradients_match_finite_differences(gradient):
    """d loss / d y0 against central differences of the solve (tight tolerance, so the
    adaptive step sequence barely moves with the perturbation)."""
    func = SmallField()
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    y0 = torch.tensor([[0.5, -0.3]], dtype=torch.float64)

    def loss(y):
        return odeint(func, y, t, rtol=1e-10, atol=1e-10, gradient=gradient)[-1].pow(2).sum()

    y = y0.clone().requires_grad_(True)
    loss(y).backward()
    eps = 1e-6
    with torch.no_grad():
        fd = torch.stack([(loss(y0 + eps * e) - loss(y0 - eps * e)) / (2 * eps)
                          for e in torch.eye(2, dtype=torch.float64).unsqueeze(1)]).reshape(1, 2)
    torch.testing.assert_close(y.grad, fd, rtol=1e-6, atol=1e-8)


def test_checkpoint_with_tuple_state_and_explicit_params():
    k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    def f(t, state):
        a, b = state
        return -k * a, k * a.sum() * torch.ones_like(b)

    y0 = (torch.ones(3, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    a, b = odeint(f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=1e-10, atol=1e-10,
                  gradient="checkpoint", adjoint_params=(k,))
    b[-1].sum().backward()
    # b(1) = 3 (1 - exp(-k)); d/dk = 3 exp(-k)
    torch.testing.assert_close(k.grad, 3 * torch.exp(-k.detach()), rtol=1e-7, atol=0)


def test_checkpoints_kept_grow_like_the_square_root_of_the_steps():
    for n in (100, 1000, 10_000):
        kept = Checkpoints(torch.zeros(1), every=None)
        for i in range(n):
            kept(AcceptedStep(float(i), float(i + 1), 0, False), torch.zeros(1), torch.zeros(1))
        segment = max(b - a for a, b in zip(sorted(kept.states), sorted(kept.states)[1:] + [n]))
        assert len(kept.states) <= 2 * math.sqrt(2 * n) + 2, (n, len(kept.states))
        assert segment <= 2 * math.sqrt(2 * n) + 2, (n, segment)
    fixed = Checkpoints(torch.zeros(1), every=10)
    for i in range(95):
        fixed(AcceptedStep(float(i), float(i + 1), 0, False), torch.zeros(1), torch.zeros(1))
    assert sorted(fixed.states) == list(range(0, 95, 10))


def test_checkpoint_every_option():
    default = gradients("checkpoint", "rk4", {"step_size": 0.05})
    every = gradients("checkpoint", "rk4", {"step_size": 0.05, "checkpoint_every": 3})
    for a, b in zip(every[1:3] + tuple(every[3]), default[1:3] + tuple(default[3])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(InvalidOptionError, match="checkpoint_every.*gradient='checkpoint' only"):
        gradients("direct", "rk4", {"step_size": 0.05, "checkpoint_every": 3})
    with pytest.raises(InvalidOptionError, match="positive integer"):
        gradients("checkpoint", "rk4", {"step_size": 0.05, "checkpoint_every": 0})


def test_checkpoint_backward_evaluations_are_counted():
    with collect_stats() as stats:
        gradients("checkpoint", "rk4", {"step_size": 0.1})
    # 12 steps of 4 stages forward; the replay repeats them and re-evaluates f at each checkpoint.
    assert stats.nfe_forward == 48
    assert 48 <= stats.nfe_backward <= 48 + 12


def test_unknown_gradient_is_refused():
    with pytest.raises(InvalidOptionError, match="gradient='backprop'.*direct, adjoint, checkpoint"):
        odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), gradient="backprop")


# --------------------------------------------------------------------------- events
G = 9.81


class Falling(nn.Module):
    """A ball in free fall: state (height, velocity)."""

    def forward(self, t, y):
        return torch.stack([y[1], torch.full_like(y[1], -G)])


@pytest.mark.parametrize("gradient", GRADIENTS)
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_bouncing_ball_impact_time_and_its_gradient(gradient, method):
    """Dropped from h0 at rest: impact at sqrt(2 h0 / g), d t* / d h0 = 1 / sqrt(2 g h0)."""
    h0 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    y0 = torch.stack([h0, torch.zeros((), dtype=torch.float64)])
    interface = functools.partial(odeint, gradient=gradient, adjoint_params=())
    event_t, ys = odeint_event(Falling(), y0, torch.tensor(0.0, dtype=torch.float64),
                               event_fn=lambda t, y: y[0], odeint_interface=interface, rtol=1e-9, atol=1e-9)
    assert ys.shape == (2, 2)
    assert abs(event_t.item() - math.sqrt(2 * 2.0 / G)) < 1e-7
    assert abs(ys[-1, 0].item()) < 1e-7  # on the ground
    (dt_dh0,) = torch.autograd.grad(event_t, h0, retain_graph=True)
    assert abs(dt_dh0.item() - 1 / math.sqrt(2 * G * 2.0)) < 1e-6
    # The impact velocity -sqrt(2 g h0) moves with h0 too: dv/dh0 = -g / sqrt(2 g h0).
    (dv_dh0,) = torch.autograd.grad(ys[-1, 1], h0)
    assert abs(dv_dh0.item() + G / math.sqrt(2 * G * 2.0)) < 1e-5


def test_event_with_fixed_step_method_needs_step_size():
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    with pytest.raises(InvalidOptionError, match="step_size"):
        odeint_event(Falling(), y0, torch.tensor(0.0), event_fn=lambda t, y: y[0], method="rk4")
    event_t, _ = odeint_event(Falling(), y0, torch.tensor(0.0, dtype=torch.float64), event_fn=lambda t, y: y[0],
                              method="rk4", options={"step_size": 0.01, "interp": "cubic"})
    assert abs(event_t.item() - math.sqrt(2 / G)) < 1e-6
