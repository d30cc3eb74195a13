"""Latent ODE, RNN baseline and Poisson process latent ODE: shapes, likelihoods, metrics, learning."""

import math

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from neuralode.data.events import make_events
from neuralode.data.spirals import make_spirals
from neuralode.models.latent_ode import (
    LatentODE,
    RecognitionRNN,
    gaussian_log_likelihood,
    kl_standard_normal,
    solve_at,
)
from neuralode.models.poisson import PoissonLatentODE
from neuralode.models.rnn_baseline import RNNBaseline
from neuralode.tasks.latent import LatentODETask, PoissonTask, RNNTask, rmse_per_series


SPIRALS = dict(n_spirals=16, n_points=20, n_extrap=10, dt=0.1, n_obs=8, seed=0)


def spiral_batch(**kwargs) -> dict:
    return make_spirals(**(SPIRALS | kwargs))


def pad(batch: dict, extra: int) -> dict:
    """The same series with ``extra`` padded entries (mask False, last time repeated) at the end."""
    times, values, mask = batch["times"], batch["values"], batch["mask"]
    return dict(
        batch,
        times=torch.cat([times, times[:, -1:].expand(-1, extra)], 1),
        values=torch.cat([values, torch.randn(len(values), extra, values.shape[-1])], 1),
        mask=torch.cat([mask, torch.zeros(len(mask), extra, dtype=torch.bool)], 1),
    )


def test_encoder_shapes_and_padding_is_ignored():
    torch.manual_seed(0)
    b = spiral_batch()
    encoder = RecognitionRNN(obs_dim=2, latent_dim=4, hidden=25)
    mean, logvar = encoder(b["values"], b["times"], b["mask"])
    assert mean.shape == (16, 4) and logvar.shape == (16, 4)
    padded = pad(b, 3)
    mean_p, logvar_p = encoder(padded["values"], padded["times"], padded["mask"])
    torch.testing.assert_close(mean_p, mean)
    torch.testing.assert_close(logvar_p, logvar)
    # The encoder does read the values and the times.
    assert not torch.allclose(encoder(b["values"] + 1, b["times"], b["mask"])[0], mean)
    assert not torch.allclose(encoder(b["values"], b["times"] * 1.5, b["mask"])[0], mean)


def test_encoder_rejects_unsorted_or_negative_times():
    b = spiral_batch()
    encoder = RecognitionRNN(obs_dim=2)
    with pytest.raises(ValueError, match="sorted"):
        encoder(b["values"], b["times"].flip(1), b["mask"])
    with pytest.raises(ValueError, match=">= 0"):
        encoder(b["values"], b["times"] - 1.0, b["mask"])


class Linear(nn.Module):
    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, t, y):
        return y @ self.a.T


def test_solve_at_gathers_each_series_at_its_own_times():
    torch.manual_seed(0)
    a = torch.tensor([[0.0, 1.0], [-1.0, -0.1]], dtype=torch.float64)
    y0 = torch.randn(3, 2, dtype=torch.float64)
    times = torch.tensor([[0.5, 1.0], [0.2, 2.0], [1.0, 1.5]], dtype=torch.float64)
    more = torch.tensor([[3.0], [0.0], [2.5]], dtype=torch.float64)
    solver = dict(method="dopri5", rtol=1e-9, atol=1e-9, gradient="direct")
    at_times, at_more = solve_at(Linear(a), y0, [times, more], solver)
    assert at_times.shape == (3, 2, 2) and at_more.shape == (3, 1, 2)
    exact = torch.stack([torch.stack([torch.linalg.matrix_exp(a * t) @ y0[i] for t in row]) for i, row in enumerate(times)])
    torch.testing.assert_close(at_times, exact, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(at_more[1, 0], y0[1])  # time 0 is z0 itself


def test_latent_ode_shapes_with_irregular_mask():
    torch.manual_seed(0)
    b = pad(spiral_batch(), 2)
    model = LatentODE()
    out = model(b["values"], b["times"], b["mask"], [b["interp_times"], b["extrap_times"]])
    assert out.mean.shape == (16, 4) and out.z0.shape == (16, 4)
    assert out.recon.shape == (16, 10, 2)
    assert [p.shape for p in out.preds] == [(16, 20, 2), (16, 10, 2)]
    assert [z.shape for z in out.latents] == [(16, 20, 4), (16, 10, 4)]
    assert model.elbo(b["values"], b["mask"], out).shape == (16,)
    # The mean path is deterministic; the sampled one is not.
    first = model(b["values"], b["times"], b["mask"], sample=False).recon
    torch.testing.assert_close(model(b["values"], b["times"], b["mask"], sample=False).recon, first)


def test_likelihood_and_kl_match_torch_distributions():
    torch.manual_seed(0)
    x, mean = torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    mask = torch.rand(3, 5) > 0.3
    expected = (torch.distributions.Normal(mean, 0.3).log_prob(x).sum(-1) * mask).sum(-1)
    torch.testing.assert_close(gaussian_log_likelihood(x, mean, 0.3, mask), expected)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3, 4), torch.ones(3, 4))
    torch.testing.assert_close(kl_standard_normal(mu, logvar), torch.distributions.kl_divergence(q, p).sum(-1))


def test_rmse_on_a_hand_made_case():
    pred = torch.zeros(2, 2, 2)
    target = torch.tensor([[[3.0, 3.0], [3.0, 3.0]], [[3.0, 4.0], [0.0, 0.0]]])
    torch.testing.assert_close(rmse_per_series(pred, target), torch.tensor([3.0, math.sqrt(25.0 / 4)]))
    with pytest.raises(ValueError, match="shape"):
        rmse_per_series(pred, target[:, :1])


def test_rnn_predictions_use_only_earlier_observations():
    torch.manual_seed(0)
    b = spiral_batch()
    rnn = RNNBaseline()
    interp = rnn.predict_at(b["values"], b["times"], b["mask"], b["interp_times"])
    assert interp.shape == (16, 20, 2)
    # Changing the last observation changes no prediction at or before its time.
    changed = b["values"].clone()
    changed[:, -1] += 10.0
    interp_changed = rnn.predict_at(changed, b["times"], b["mask"], b["interp_times"])
    up_to_last = b["interp_times"] <= b["times"][:, -1:]
    torch.testing.assert_close(interp_changed[up_to_last], interp[up_to_last])
    assert not torch.allclose(interp_changed[~up_to_last], interp[~up_to_last])
    # Padding changes nothing.
    p = pad(b, 3)
    torch.testing.assert_close(rnn.predict_at(p["values"], p["times"], p["mask"], b["interp_times"]), interp)
    torch.testing.assert_close(rnn.nll(p["values"], p["times"], p["mask"]), rnn.nll(b["values"], b["times"], b["mask"]))


def test_rnn_extrapolation_is_autoregressive():
    torch.manual_seed(0)
    b = spiral_batch()
    rnn = RNNBaseline()
    extrap = rnn.extrapolate(b["values"], b["times"], b["mask"], b["extrap_times"])
    assert extrap.shape == (16, 10, 2)
    # By hand: one step from the last observation, then each prediction is the next input.
    _, state = rnn.filter(b["values"], b["times"], b["mask"])
    h, value, t = state.hidden[:, -1], b["values"][:, -1], b["times"][:, -1]
    for k in range(3):
        h, value = rnn.step(h, value, b["extrap_times"][:, k] - t)
        t = b["extrap_times"][:, k]
        torch.testing.assert_close(extrap[:, k], value)
    with pytest.raises(ValueError, match="precede"):
        rnn.extrapolate(b["values"], b["times"], b["mask"], b["interp_times"])


def test_poisson_log_likelihood_of_a_constant_rate():
    torch.manual_seed(0)
    model = PoissonLatentODE(solver=dict(method="dopri5", rtol=1e-6, atol=1e-6))
    rate = 1.7
    with torch.no_grad():  # lambda(z) = softplus(bias) = 1.7 whatever z is
        model.dynamics.rate_net[2].weight.zero_()
        model.dynamics.rate_net[2].bias.fill_(math.log(math.expm1(rate)))
    d = make_events(n_sequences=4, t_end=5.0, seed=0)
    out = model(d["times"], d["mask"], d["t_end"], [d["grid_times"]])
    n = d["mask"].sum(1)
    torch.testing.assert_close(out.log_likelihood, n * math.log(rate) - rate * 5.0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.rates[0], torch.full((4, 100), rate))


def test_adjoint_gradients_reach_the_encoder_and_match_backprop():
    b = spiral_batch(n_spirals=3, n_obs=4)
    grads = []
    for gradient in ("adjoint", "direct"):
        torch.manual_seed(0)
        model = LatentODE(solver=dict(method="dopri5", rtol=1e-7, atol=1e-7, gradient=gradient))
        out = model(b["values"], b["times"], b["mask"], sample=False)
        model.elbo(b["values"], b["mask"], out).sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for with_adjoint, with_backprop in zip(*grads):
        assert with_adjoint is not None and with_adjoint.abs().sum() > 0
        torch.testing.assert_close(with_adjoint, with_backprop, rtol=1e-3, atol=1e-3)


def loss_after_steps(task, batch, steps: int, lr: float) -> tuple[float, float]:
    """Training loss on ``batch`` before and after ``steps`` Adam steps, with the same noise draw."""

    def loss() -> float:
        torch.manual_seed(123)
        with torch.no_grad():
            return task.training_step(batch)["loss"].item()

    before = loss()
    optimiser = torch.optim.Adam(task.parameters(), lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        task.training_step(batch)["loss"].backward()
        optimiser.step()
    return before, loss()


@pytest.mark.slow
def test_a_few_steps_lower_each_loss():
    torch.manual_seed(0)
    b = spiral_batch(n_spirals=8)
    before, after = loss_after_steps(LatentODETask(LatentODE()), b, steps=10, lr=0.02)
    assert after < 0.8 * before
    before, after = loss_after_steps(RNNTask(RNNBaseline()), b, steps=15, lr=0.02)
    assert after < 0.8 * before
    events = make_events(n_sequences=4, t_end=4.0, seed=0)
    before, after = loss_after_steps(PoissonTask(PoissonLatentODE()), events, steps=5, lr=0.05)
    assert after < before


def test_tasks_evaluate_and_draw():
    torch.manual_seed(0)
    b = spiral_batch(n_spirals=4)
    for task in (LatentODETask(LatentODE()), RNNTask(RNNBaseline())):
        metrics = task.evaluation_step(b)
        assert set(metrics) >= {"loss", "rmse_interp", "rmse_extrap", "n"} and metrics["n"] == 4
        assert task.monitor == "rmse_extrap" and task.monitor in metrics
        assert isinstance(task.figures(b)["reconstructions"], Figure)
    assert "elbo" in LatentODETask(LatentODE()).evaluation_step(b)
    events = make_events(n_sequences=3, t_end=3.0, seed=0)
    task = PoissonTask(PoissonLatentODE())
    metrics = task.evaluation_step(events)
    assert {"loss", "log_likelihood", "rate_rmse", "n"} <= set(metrics) and metrics["n"] == 3
    assert isinstance(task.figures(events)["intensity"], Figure)


def test_latent_dynamics_depth():
    from neuralode.models.latent_ode import LatentODE

    linear_layers = lambda model: [m for m in model.dynamics.net if isinstance(m, torch.nn.Linear)]  # noqa: E731
    assert [tuple(m.weight.shape) for m in linear_layers(LatentODE())] == [(20, 4), (4, 20)]
    # The authors' example: fc1, fc2, fc3 with ELU between them.
    deep = LatentODE(dynamics_layers=2)
    assert [tuple(m.weight.shape) for m in linear_layers(deep)] == [(20, 4), (20, 20), (4, 20)]
    assert sum(isinstance(m, torch.nn.ELU) for m in deep.dynamics.net) == 2
    with pytest.raises(ValueError, match="dynamics_layers must be a positive integer, got 0"):
        LatentODE(dynamics_layers=0)
