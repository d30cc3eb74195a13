"""Memory of the 2-D flows: evaluation and drawing in chunks without autograd graphs, and no
graph left behind by a training step under the trainer's saved-tensor meter."""

import gc

import pytest
import torch

from neuralode.models.cnf import CNF, MLPField, PlanarField
from neuralode.models.planar_nf import PlanarFlow
from neuralode.tasks.density import (DensityMatchingTask, MaximumLikelihoodTask, density_on_grid, flow_samples,
                                     in_chunks)
from neuralode.train.memory import SavedTensorsMeter

# Fixed steps: every point is solved on its own, so chunking cannot change a step size.
RK4 = {"method": "rk4", "options": {"step_size": 0.25}}


def cnf(gradient: str = "adjoint", trace: str = "exact") -> CNF:
    torch.manual_seed(0)
    return CNF(MLPField(width=16, depth=2, time_layer="concatsquash"), t1=0.5, solver={**RK4, "gradient": gradient},
               trace=trace)


def planar(direction: str) -> PlanarFlow:
    torch.manual_seed(0)
    return PlanarFlow(layers=4, direction=direction, init_scale=0.5)


FLOWS = {"cnf": cnf, "planar_density": lambda: planar("density"), "planar_sample": lambda: planar("sample")}


def test_in_chunks_covers_every_row_in_order():
    points = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(in_chunks(lambda part: part * 2, points, chunk=2), points * 2)
    with pytest.raises(ValueError, match="chunk"):
        in_chunks(lambda part: part, points, chunk=0)


@pytest.mark.parametrize("name", sorted(FLOWS))
@pytest.mark.slow
def test_grid_density_in_chunks_matches_one_call_and_keeps_no_graph(name):
    flow = FLOWS[name]().eval()
    like = torch.zeros(1, 2)
    whole = density_on_grid(flow, 3.0, 12, like, chunk=12 * 12)
    for chunk in (1, 7, 50):
        torch.testing.assert_close(density_on_grid(flow, 3.0, 12, like, chunk=chunk), whole)
    # Called with gradients on and parameters that want them: still no graph.
    assert torch.is_grad_enabled() and any(p.requires_grad for p in flow.parameters())
    assert not whole.requires_grad and whole.grad_fn is None
    half_way = density_on_grid(flow, 3.0, 12, like, fraction=0.5, chunk=5)
    torch.testing.assert_close(half_way, density_on_grid(flow, 3.0, 12, like, fraction=0.5))
    assert not half_way.requires_grad


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_samples_in_chunks_match_one_call_and_keep_no_graph(name):
    flow = FLOWS[name]().eval()
    z0 = torch.randn(40, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = flow.sample_with_log_prob(z0)[0]
    chunked = flow_samples(flow, z0, chunk=6)
    torch.testing.assert_close(chunked, whole)
    assert not chunked.requires_grad


@pytest.mark.parametrize("gradient", ["adjoint", "direct"])
def test_maximum_likelihood_evaluation_in_chunks(gradient):
    task = MaximumLikelihoodTask(cnf(gradient)).eval()
    batch = torch.randn(30, 2, generator=torch.Generator().manual_seed(2))
    whole = task.evaluation_step(batch)
    task.chunk = 4
    chunked = task.evaluation_step(batch)
    assert chunked["n"] == whole["n"] == 30
    assert chunked["nll"] == pytest.approx(whole["nll"], rel=1e-6)


@pytest.mark.slow
def test_density_matching_evaluation_and_figures_in_chunks():
    torch.manual_seed(0)
    flow = CNF(PlanarField(units=4, hidden=8), solver=RK4).eval()
    task = DensityMatchingTask(flow, energy="u1", grid_size=6, plot_samples=10)
    batch = torch.randn(30, 2, generator=torch.Generator().manual_seed(3))
    whole = task.evaluation_step(batch)
    task.chunk = 4
    assert task.evaluation_step(batch)["kl"] == pytest.approx(whole["kl"], rel=1e-6)
    assert len(task.figures(batch)["density"].axes) == 3


def live_tensors() -> int:
    gc.collect()
    # type(), not isinstance(): the latter trips a deprecation warning of torch.distributed.
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


@pytest.mark.parametrize("gradient", ["adjoint", "direct"])
@pytest.mark.slow
def test_training_steps_under_the_saved_tensor_meter_leave_no_graph(gradient):
    # The trainer wraps each forward pass in SavedTensorsMeter, whose hook keeps the tensor
    # itself. A CNF's per-evaluation trace graphs (the forward solve of the adjoint, the solver's
    # first-step guess) used to stay alive under it: thousands of tensors after a few steps.
    flow = CNF(MLPField(width=16, depth=2, time_layer="concatsquash"), t1=0.5,
               solver={"method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "gradient": gradient}, trace="hutchinson").train()
    task = MaximumLikelihoodTask(flow)
    meter = SavedTensorsMeter()
    batch = torch.randn(64, 2, generator=torch.Generator().manual_seed(4))

    def step():
        with meter:
            loss = task.training_step(batch)["loss"]
        task.zero_grad(set_to_none=True)
        loss.backward()

    step()
    before = live_tensors()
    for _ in range(3):
        step()
    assert live_tensors() <= before
    assert meter.peak_bytes > 0
