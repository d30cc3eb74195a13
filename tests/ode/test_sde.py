"""sdeint: strong and weak order on geometric Brownian motion against its exact solution,
determinism under a seed, gradients through the solver, and clear errors for bad input."""

from __future__ import annotations

import math

import pytest
import torch

from neuralode.ode import collect_stats
from neuralode.ode.errors import InvalidOptionError, InvalidTimeError, NonFiniteStateError, StateMismatchError
from neuralode.ode.sde import BrownianGrid, sdeint

# Geometric Brownian motion dX = mu X dt + s X dW, X(0) = 1: X(T) = exp((mu - s^2 / 2) T + s W(T)).
MU, SIGMA, T = 1.0, 0.5, 1.0


def drift(t, x):
    return MU * x


def diffusion(t, x):
    return SIGMA * x


def slope(hs: list[float], errors: list[float]) -> float:
    """Least-squares slope of log(error) against log(h): the observed order."""
    lx, ly = torch.tensor(hs).log(), torch.tensor(errors).log()
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


@pytest.mark.parametrize("method, order", [("euler", 0.5), ("milstein", 1.0)])
def test_strong_order_on_geometric_brownian_motion(method, order):
    paths, fine = 4000, 512
    bm = BrownianGrid(0.0, T, fine, (paths,), generator=torch.Generator().manual_seed(0))
    exact = torch.exp((MU - SIGMA**2 / 2) * T + SIGMA * bm.final)
    hs, errors = [], []
    for steps in (16, 32, 64, 128, 256):  # (at 8 steps Euler-Maruyama is not yet asymptotic)
        x = sdeint(drift, diffusion, torch.ones(paths, dtype=torch.float64), torch.tensor([0.0, T]), method=method,
                   dt=T / steps, bm=bm)[-1]
        hs.append(T / steps)
        errors.append(float((x - exact).abs().mean()))
    assert abs(slope(hs, errors) - order) < 0.15, (method, errors)


def test_weak_order_of_euler_maruyama_on_geometric_brownian_motion():
    """|E X_N - E X(T)| ~ h; E X(T) = exp(mu T). The Monte Carlo noise of 200,000 paths (about
    0.003) is well below the smallest bias measured (about 0.04)."""
    paths = 200_000
    hs, errors = [], []
    for i, steps in enumerate((4, 8, 16, 32)):
        gen = torch.Generator().manual_seed(100 + i)
        x = sdeint(drift, diffusion, torch.ones(paths, dtype=torch.float64), torch.tensor([0.0, T]), dt=T / steps,
                   generator=gen)[-1]
        hs.append(T / steps)
        errors.append(abs(float(x.mean()) - math.exp(MU * T)))
    assert abs(slope(hs, errors) - 1.0) < 0.2, errors


def test_the_same_seed_gives_the_same_path_and_another_seed_another():
    y0, t = torch.ones(5, 3), torch.tensor([0.0, 0.5, 1.0])

    def solve(seed):
        return sdeint(drift, diffusion, y0, t, dt=0.1, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(solve(3), solve(3))
    assert not torch.equal(solve(3), solve(4))
    ys = solve(3)
    assert ys.shape == (3, 5, 3) and torch.equal(ys[0], y0)


def test_gradients_flow_through_the_solver_to_y0_and_parameters():
    w = torch.tensor(0.3, requires_grad=True)
    sigma = torch.tensor(0.2, requires_grad=True)
    y0 = torch.ones(4, requires_grad=True)
    y = sdeint(lambda t, x: w * x, lambda t, x: sigma.expand(1), y0, torch.tensor([0.0, 1.0]), dt=0.25,
               generator=torch.Generator().manual_seed(0))[-1]
    y.sum().backward()
    assert w.grad is not None and sigma.grad is not None and y0.grad is not None
    # additive noise: dy/dy0 = (1 + w h)^4 exactly
    assert torch.allclose(y0.grad, torch.full((4,), (1 + 0.3 * 0.25) ** 4))


def test_scalar_diffusion_per_example_broadcasts_and_is_counted():
    y0 = torch.zeros(2, 3, 4, 4)
    sigma = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    with collect_stats() as stats:
        y = sdeint(lambda t, x: torch.zeros_like(x), lambda t, x: sigma, y0, torch.tensor([0.0, 1.0]), dt=0.5,
                   generator=torch.Generator().manual_seed(0))[-1]
    assert torch.equal(y[0], torch.zeros(3, 4, 4)) and y[1].abs().sum() > 0  # sigma 0: no noise
    assert stats.nfe_forward == 4 and stats.n_solves == 1  # 2 steps x (drift + diffusion)


def test_milstein_equals_euler_for_additive_noise():
    y0, t = torch.randn(6, dtype=torch.float64), torch.tensor([0.0, 1.0])
    bm = BrownianGrid(0.0, 1.0, 10, (6,), generator=torch.Generator().manual_seed(1))
    kwargs = dict(dt=0.1, bm=bm)
    euler = sdeint(drift, lambda t, x: torch.full_like(x, 0.7), y0, t, method="euler", **kwargs)
    milstein = sdeint(drift, lambda t, x: torch.full_like(x, 0.7), y0, t, method="milstein", **kwargs)
    assert torch.allclose(euler, milstein)


def test_bad_input_is_named():
    y0, t = torch.ones(2, 3), torch.tensor([0.0, 1.0])
    with pytest.raises(StateMismatchError, match=r"diffusion\(t, y\) returned shape \(2, 2\).*\(2, 3\)"):
        sdeint(drift, lambda t, x: torch.ones(2, 2), y0, t)
    with pytest.raises(StateMismatchError, match=r"drift\(t, y\) must return .* \(2, 3\)"):
        sdeint(lambda t, x: x[:, :1], diffusion, y0, t)
    with pytest.raises(InvalidOptionError, match="dt must be a positive"):
        sdeint(drift, diffusion, y0, t, dt=0.0)
    with pytest.raises(InvalidOptionError, match="euler, milstein"):
        sdeint(drift, diffusion, y0, t, method="srk")
    with pytest.raises(InvalidTimeError, match="forward in time"):
        sdeint(drift, diffusion, y0, torch.tensor([1.0, 0.0]))
    with pytest.raises(NonFiniteStateError, match="non-finite"):
        sdeint(lambda t, x: x * 1e30, diffusion, y0 * 1e30, t, dt=0.5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InvalidTimeError, match="not a point"):
        sdeint(drift, diffusion, y0, t, dt=0.4, bm=BrownianGrid(0.0, 1.0, 4, (2, 3)))  # steps of 1/3
