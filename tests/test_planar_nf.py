"""Planar normalizing flow: log-det, invertibility constraint, inverse, both directions, training."""

import math

import pytest
import torch

from neuralode.data.toy2d import sample_toy
from neuralode.models.cnf import standard_normal_log_prob
from neuralode.models.planar_nf import PlanarFlow, PlanarLayer
from neuralode.tasks.density import DensityMatchingTask, MaximumLikelihoodTask
from tests.helpers import train_steps


def layer_with(u, w, b) -> PlanarLayer:
    layer = PlanarLayer(dim=len(u)).double()
    with torch.no_grad():
        layer.u.copy_(torch.tensor(u))
        layer.w.copy_(torch.tensor(w))
        layer.b.fill_(b)
    return layer


# The second layer has w^T u = -6: without the constraint it would not be invertible.
LAYERS = [([0.5, -1.2], [1.0, 0.3], 0.2), ([-3.0, 0.0], [2.0, 0.5], -0.4), ([1.0, 2.0, -1.0], [0.7, -0.2, 1.1], 0.0)]


@pytest.mark.parametrize("u, w, b", LAYERS)
def test_log_det_matches_autograd_slogdet(u, w, b):
    layer = layer_with(u, w, b)
    z = torch.randn(6, len(u), dtype=torch.float64)
    _, log_det = layer(z)
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda zi: layer(zi[None])[0][0], z[i])
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign > 0  # orientation preserving, as the constraint promises
        assert torch.allclose(log_det[i], logabsdet, atol=1e-10)


@pytest.mark.parametrize("u, w, b", LAYERS)
def test_constraint_and_inverse(u, w, b):
    layer = layer_with(u, w, b)
    assert layer.w @ layer.u_hat() > -1
    z = 3 * torch.randn(50, len(u), dtype=torch.float64)
    y, _ = layer(z)
    assert torch.allclose(layer.inverse(y), z, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverse_converges_where_newton_alone_oscillates(dtype):
    # A layer of a trained Figure 4 flow: w^T u_hat = 5.9 makes the map along w a steep tanh
    # step, and plain Newton from a = c jumps between its two flat ends (c = -4.29 took more
    # than 60 iterations).
    layer = layer_with([-1.9044, -0.6649], [-3.3389, -0.8065], 0.0569).to(dtype)
    assert layer.w @ layer.u_hat() > 5
    c = torch.linspace(-12, 12, 241, dtype=dtype)  # w^T y + b
    y = (c - layer.b)[:, None] * layer.w.detach() / (layer.w @ layer.w).detach() + 0.3
    z = layer.inverse(y)
    assert torch.allclose(layer(z)[0], y, atol=1e-5 if dtype == torch.float32 else 1e-10)


def test_flow_log_prob_matches_slogdet_of_whole_flow():
    torch.manual_seed(0)
    flow = PlanarFlow(dim=2, layers=5, direction="density", init_scale=1.0).double()

    def to_base(x):
        for layer in flow.layers:
            x = layer(x)[0]
        return x

    x = torch.randn(4, 2, dtype=torch.float64)
    got = flow.log_prob(x)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda xi: to_base(xi[None])[0], x[i])
        expected = standard_normal_log_prob(to_base(x[i : i + 1]))[0] + torch.linalg.slogdet(jac)[1]
        assert torch.allclose(got[i], expected, atol=1e-10)


@pytest.mark.parametrize("direction", ["sample", "density"])
def test_both_directions_agree_with_their_numerical_inverse(direction):
    torch.manual_seed(0)
    flow = PlanarFlow(dim=2, layers=6, direction=direction, init_scale=1.0).double()
    z0 = torch.randn(20, 2, dtype=torch.float64)
    for fraction in [0.5, 1.0]:
        x, log_q = flow.sample_with_log_prob(z0, fraction)
        assert torch.allclose(flow.log_prob(x, fraction), log_q, atol=1e-8)
    assert torch.equal(flow.sample_path(z0, [0.0])[0], z0)


def test_log_prob_integrates_to_one():
    torch.manual_seed(0)
    # Moderate layers: a w^T u_hat near -1 makes a density ridge too sharp for this grid.
    flow = PlanarFlow(dim=2, layers=4, direction="sample", init_scale=0.3).double()
    axis = torch.linspace(-8, 8, 161, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 2
    assert abs(mass.item() - 1) < 1e-6


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="direction"):
        PlanarFlow(direction="forward")
    with pytest.raises(ValueError, match="layer"):
        PlanarFlow(layers=0)


@pytest.mark.slow
def test_density_matching_training_lowers_kl():
    torch.manual_seed(0)
    task = DensityMatchingTask(PlanarFlow(layers=8, direction="sample"), energy="u1")
    first, last = train_steps(task, lambda step: torch.randn(256, 2), steps=100, lr=3e-2, window=5)
    assert last < first - 0.3


def test_maximum_likelihood_training_lowers_nll():
    torch.manual_seed(0)
    data = sample_toy("two_moons", 512, seed=0)
    task = MaximumLikelihoodTask(PlanarFlow(layers=8, direction="density"))
    first, last = train_steps(task, lambda step: data, steps=100, lr=3e-2, window=5)
    assert last < first - 0.3
    assert math.isfinite(task.evaluation_step(data)["nll"])
