"""Continuous normalizing flow: trace estimators, change of variables, adjoint, training."""

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from neuralode.data.toy2d import sample_toy
from neuralode.models.cnf import CNF, MLPField, PlanarField, sample_noise, trace_exact, trace_hutchinson
from neuralode.tasks.density import DensityMatchingTask, MaximumLikelihoodTask
from tests.helpers import train_steps

TIGHT = {"method": "dopri5", "rtol": 1e-9, "atol": 1e-9, "gradient": "direct"}


class LinearField(nn.Module):
    """f(t, z) = A z: z(t) = expm(t A) z(0), trace(df/dz) = trace(A)."""

    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ self.A.T


def random_matrix(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(dim, dim, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(kind):
    torch.manual_seed(0)
    A = random_matrix(3, seed=1)
    draws = 20000
    # Every row of the batch is its own draw: same z, independent noise.
    z = torch.randn(1, 3, dtype=torch.float64).expand(draws, 3).clone().requires_grad_(True)
    f = z @ A.T
    estimates = trace_hutchinson(f, z, sample_noise(z, kind), create_graph=False)
    standard_error = estimates.std() / math.sqrt(draws)
    assert standard_error > 0  # the estimator is noisy, so the check below is not vacuous
    assert abs(estimates.mean() - torch.trace(A)) < 3 * standard_error


def test_exact_trace_matches_jacobian_of_nonlinear_field():
    torch.manual_seed(0)
    field = MLPField(dim=3, width=16, depth=2).double()
    t = torch.tensor(0.3, dtype=torch.float64)
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    got = trace_exact(field(t, z), z, create_graph=False)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda zi: field(t, zi[None])[0], z[i].detach())
        assert torch.allclose(got[i], torch.trace(jac), atol=1e-12)


def test_rademacher_values_are_plus_minus_one():
    noise = sample_noise(torch.zeros(1000, 2), "rademacher")
    assert set(noise.unique().tolist()) == {-1.0, 1.0}


def linear_closed_form_log_prob(x: torch.Tensor, A: torch.Tensor, t1: float) -> torch.Tensor:
    # x = M z0 with M = expm(t1 A): log q(x) = log N(M^-1 x) - log det M, log det M = t1 tr A.
    z0 = torch.linalg.solve(torch.linalg.matrix_exp(t1 * A), x.T).T
    log_n = -0.5 * (z0**2).sum(-1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    return log_n - t1 * torch.trace(A)


@pytest.mark.parametrize("gradient", ["direct", "adjoint"])
def test_change_of_variables_on_linear_field(gradient):
    A, t1 = random_matrix(2, seed=2), 0.7
    flow = CNF(LinearField(A), dim=2, t1=t1, solver={**TIGHT, "gradient": gradient}).eval()
    x = torch.randn(16, 2, dtype=torch.float64)
    expected = linear_closed_form_log_prob(x, A, t1)
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-7)
    # Sampling forward: the point and its log q agree with the closed form too.
    z0 = torch.randn(16, 2, dtype=torch.float64)
    xs, log_q = flow.sample_with_log_prob(z0)
    assert torch.allclose(xs, z0 @ torch.linalg.matrix_exp(t1 * A).T, atol=1e-7)
    assert torch.allclose(log_q, linear_closed_form_log_prob(xs, A, t1), atol=1e-7)


def test_partial_flow_and_path():
    A, t1 = random_matrix(2, seed=3), 1.0
    flow = CNF(LinearField(A), dim=2, t1=t1, solver=TIGHT).eval()
    x = torch.randn(8, 2, dtype=torch.float64)
    assert torch.allclose(flow.log_prob(x, fraction=0.4), linear_closed_form_log_prob(x, A, 0.4), atol=1e-7)
    z0 = torch.randn(8, 2, dtype=torch.float64)
    path = flow.sample_path(z0, [0.0, 0.5, 1.0])
    assert torch.equal(path[0], z0)
    assert torch.allclose(path[1], z0 @ torch.linalg.matrix_exp(0.5 * A).T, atol=1e-7)
    assert torch.allclose(path[2], z0 @ torch.linalg.matrix_exp(A).T, atol=1e-7)


def _log_prob_grads(flow: CNF, x: torch.Tensor, seed: int) -> list[torch.Tensor]:
    flow.zero_grad()
    torch.manual_seed(seed)  # same Hutchinson noise for both solvers
    flow.log_prob(x).sum().backward()
    return [p.grad.clone() for p in flow.parameters()]


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_adjoint_gradients_match_backprop(trace):
    torch.manual_seed(0)
    field = PlanarField(dim=2, units=4, hidden=8).double()
    x = torch.randn(12, 2, dtype=torch.float64)
    solver = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-10}
    direct = CNF(field, t1=1.0, solver={**solver, "gradient": "direct"}, trace=trace, noise="rademacher").train()
    adjoint = CNF(field, t1=1.0, solver={**solver, "gradient": "adjoint"}, trace=trace, noise="rademacher").train()
    for g_direct, g_adjoint in zip(_log_prob_grads(direct, x, 5), _log_prob_grads(adjoint, x, 5)):
        assert torch.allclose(g_direct, g_adjoint, rtol=1e-6, atol=1e-8)


def test_hutchinson_only_in_training_mode():
    torch.manual_seed(0)
    flow = CNF(MLPField(width=8, depth=1), solver={"method": "rk4", "options": {"step_size": 0.25}}, trace="hutchinson")
    x = torch.randn(32, 2)
    flow.eval()
    exact_a, exact_b = flow.log_prob(x), flow.log_prob(x)
    assert torch.equal(exact_a, exact_b)
    flow.train()
    assert not torch.allclose(flow.log_prob(x), exact_a)


def test_planar_field_is_a_gated_sum_of_planar_units():
    torch.manual_seed(0)
    field = PlanarField(dim=2, units=3, hidden=4)
    t, z = torch.tensor(0.2), torch.randn(5, 2)
    p = field.hypernet(t.reshape(1, 1)).reshape(3, 6)
    u, w, b, gate = p[:, :2], p[:, 2:4], p[:, 4], torch.sigmoid(p[:, 5])
    expected = sum(gate[m] * u[m] * torch.tanh(z @ w[m] + b[m])[:, None] for m in range(3))
    assert torch.allclose(field(t, z), expected, atol=1e-6)


class FieldOnly(nn.Module):
    """A field without its closed-form trace: the flow falls back to autograd's."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.field(t, z)


def test_planar_closed_form_trace_equals_autograd_trace_and_its_gradients():
    torch.manual_seed(0)
    field = PlanarField(dim=3, units=5, hidden=8).double()
    t = torch.tensor(0.4, dtype=torch.float64)
    z = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    dz, trace = field.forward_with_trace(t, z)
    assert torch.equal(dz, field(t, z))
    assert torch.allclose(trace, trace_exact(field(t, z), z, create_graph=False), atol=1e-12)
    # A training step differentiates the log-density through the trace: same gradients as the
    # autograd trace (which the flow uses for fields without a closed form).
    x = torch.randn(9, 3, dtype=torch.float64)
    solver = {"method": "dopri5", "rtol": 1e-9, "atol": 1e-9, "gradient": "direct"}
    closed = CNF(field, dim=3, solver=solver).train()
    closed.log_prob(x).sum().backward()
    grads_closed = [p.grad.clone() for p in field.parameters()]
    field.zero_grad()
    CNF(FieldOnly(field), dim=3, solver=solver).train().log_prob(x).sum().backward()
    for got, expected in zip(grads_closed, [p.grad for p in field.parameters()]):
        assert torch.allclose(got, expected, rtol=1e-7, atol=1e-10)


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="trace"):
        CNF(MLPField(), trace="skilling")
    with pytest.raises(ValueError, match="noise"):
        CNF(MLPField(), noise="uniform")
    with pytest.raises(ValueError, match="time_layer"):
        MLPField(time_layer="hyper")
    with pytest.raises(ValueError, match="shape"):
        CNF(MLPField(), solver=TIGHT).log_prob(torch.zeros(4, 3))


class ScaledIdentity(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.scale * z


def test_kl_is_zero_when_flow_equals_target():
    # Zero field: q = N(0, I); target U = |z|^2 / 2 is the same density, so KL = 0 exactly.
    flow = CNF(ScaledIdentity(), solver=TIGHT).double()
    task = DensityMatchingTask(flow, energy=lambda z: 0.5 * (z**2).sum(-1))
    out = task.evaluation_step(torch.randn(64, 2, dtype=torch.float64))
    assert abs(out["kl"]) < 1e-6 and out["n"] == 64


def test_maximum_likelihood_training_lowers_nll():
    torch.manual_seed(0)
    data = sample_toy("8gaussians", 128, seed=0)
    flow = CNF(MLPField(width=16, depth=2), solver={"method": "rk4", "options": {"step_size": 0.25}, "gradient": "adjoint"},
               trace="hutchinson")
    task = MaximumLikelihoodTask(flow).train()
    first, last = train_steps(task, lambda step: data, steps=15, lr=5e-2, window=3)
    assert last < first - 0.1


def test_density_matching_training_lowers_kl():
    torch.manual_seed(0)
    flow = CNF(PlanarField(units=8, hidden=16), solver={"method": "rk4", "options": {"step_size": 0.25}})
    task = DensityMatchingTask(flow, energy="u1").train()
    first, last = train_steps(task, lambda step: torch.randn(128, 2), steps=15, lr=5e-2, window=3)
    assert last < first - 0.1


def test_figures_are_drawn():
    flow = CNF(MLPField(width=8, depth=1), solver={"method": "rk4", "options": {"step_size": 0.5}}).eval()
    task = MaximumLikelihoodTask(flow, grid_size=8, plot_samples=16)
    figs = task.figures(sample_toy("moons", 32))
    assert len(figs["density"].axes) == 3
    task = DensityMatchingTask(flow, energy="u2", grid_size=8, plot_samples=16)
    assert len(task.figures(torch.randn(32, 2))["density"].axes) == 3


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "model, data",
    [
        ("cnf_density_matching", "energy"),
        ("nf_density_matching", "energy"),
        ("cnf_maximum_likelihood", "toy2d"),
        ("nf_maximum_likelihood", "toy2d"),
        ("cnf_ffjord", "toy2d"),
    ],
)
def test_model_and_data_configs_instantiate_and_step(model, data):
    cfg = OmegaConf.create(
        {
            "solver": OmegaConf.load(CONFIGS / "solver" / "rk4.yaml"),
            "data": OmegaConf.load(CONFIGS / "data" / f"{data}.yaml"),
            "model": OmegaConf.load(CONFIGS / "model" / f"{model}.yaml"),
        }
    )
    cfg.data.batch_size, cfg.data.eval_batch_size = 8, 8
    cfg.data.merge_with({"steps_per_epoch": 1, "eval_samples": 8} if data == "energy" else {"n_train": 8, "n_eval": 8})
    datamodule = instantiate(cfg.data)
    task = instantiate(cfg.model)
    batch = next(iter(datamodule.train_dataloader(torch.Generator().manual_seed(0))))
    task.train()
    out = task.training_step(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out[task.monitor] == out["loss"].detach()
    task.eval()
    metrics = task.evaluation_step(next(iter(datamodule.eval_dataloader())))
    assert math.isfinite(metrics[task.monitor]) and metrics["n"] == 8
