"""Memory of the 2-D flows: no graph left behind by a training step under the trainer's
saved-tensor meter."""

import gc

import pytest
import torch

from neuralode.models.cnf import CNF, MLPField
from neuralode.tasks.density import MaximumLikelihoodTask
from neuralode.train.memory import SavedTensorsMeter


def live_tensors() -> int:
    gc.collect()
    # type(), not isinstance(): the latter trips a deprecation warning of torch.distributed.
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


@pytest.mark.parametrize("adjoint", [True, False])
def test_training_steps_under_the_saved_tensor_meter_leave_no_graph(adjoint):
    # The trainer wraps each forward pass in SavedTensorsMeter, whose hook keeps the tensor
    # itself. A CNF's per-evaluation trace graphs (the forward solve of the adjoint, the solver's
    # first-step guess) used to stay alive under it: thousands of tensors after a few steps.
    flow = CNF(MLPField(width=16, depth=2, time_layer="concatsquash"), t1=0.5,
               solver={"method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "adjoint": adjoint}, trace="hutchinson").train()
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
