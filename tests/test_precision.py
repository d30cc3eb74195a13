"""The trainer's arithmetic settings (neuralode/train/precision.py): bf16 autocast keeps the ODE
solver's state in fp32, channels-last changes the layout and not the numbers, fp16 is refused
off CUDA, and on CUDA (skipped here) fp16 trains with loss scaling that a checkpoint keeps."""

from __future__ import annotations

import pytest
import torch

from neuralode.models.odeblock import ODEBlock
from neuralode.models.odenet import ODENet
from neuralode.ode import odeint, odeint_adjoint
from neuralode.ode.errors import StateMismatchError
from neuralode.tasks.classification import ClassificationTask
from neuralode.train.config import ConfigError, TrainerConfig, check_trainer_settings
from neuralode.train.precision import Precision

from tests.blobs import make_trainer


class RecordingField(torch.nn.Module):
    """A linear field that records the dtype of its state and of its own output."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.seen = []

    def forward(self, t, y):
        dy = self.lin(y)
        self.seen.append((y.dtype, dy.dtype))
        return dy


def test_bf16_autocast_computes_the_field_in_half_and_keeps_the_state_in_fp32():
    torch.manual_seed(0)
    func = RecordingField()
    y0 = torch.randn(4, 3)
    t = torch.tensor([0.0, 1.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ys = odeint(func, y0, t, rtol=1e-3, atol=1e-4)
    assert ys.dtype == torch.float32
    assert func.seen and all(seen == (torch.float32, torch.bfloat16) for seen in func.seen)
    reference = odeint(func, y0, t, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(ys, reference, atol=0.05, rtol=0.05)  # bf16 has 8 bits of mantissa
    # Outside autocast a field of the wrong dtype is still the user's mistake.
    with pytest.raises(StateMismatchError, match="dtype torch.bfloat16"):
        odeint(lambda t, y: y.bfloat16(), y0, t)


def test_the_adjoint_backward_reenters_the_forward_autocast():
    torch.manual_seed(0)
    func, y0, t = RecordingField(), torch.randn(4, 3, requires_grad=True), torch.tensor([0.0, 0.5, 1.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ys = odeint_adjoint(func, y0, t, rtol=1e-4, atol=1e-5)
    forward_calls = len(func.seen)
    ys.square().sum().backward()  # outside autocast, as a training loop calls it
    assert len(func.seen) > forward_calls
    assert all(out == torch.bfloat16 for _, out in func.seen[forward_calls:])
    grads = [y0.grad.clone(), func.lin.weight.grad.clone()]
    y0.grad = func.lin.weight.grad = None
    odeint_adjoint(func, y0, t, rtol=1e-4, atol=1e-5).square().sum().backward()
    for half, full in zip(grads, [y0.grad, func.lin.weight.grad]):
        assert half.dtype == torch.float32
        torch.testing.assert_close(half, full, rtol=0.05, atol=0.05)


def test_the_ode_block_lifts_a_half_input_to_an_fp32_state():
    block = ODEBlock(RecordingField(), {"method": "rk4", "options": {"step_size": 0.25}})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(torch.randn(2, 3).bfloat16())
    assert out.dtype == torch.float32
    assert {state for state, _ in block.func.seen} == {torch.float32}


def odenet_step(precision: Precision, seed: int = 0) -> tuple[float, dict[str, torch.Tensor], ClassificationTask]:
    torch.manual_seed(seed)
    task = precision.prepare(ClassificationTask(ODENet(channels=8, solver={"method": "rk4", "options": {"step_size": 0.5}})))
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    with precision.autocast():
        loss = task.training_step(precision.batch((x, y)))["loss"]
    precision.backward(loss)
    return float(loss.detach()), {name: p.grad for name, p in task.named_parameters()}, task


def test_channels_last_changes_the_layout_and_not_the_numbers():
    cpu = torch.device("cpu")
    loss, grads, _ = odenet_step(Precision("fp32", None, False, cpu))
    loss_cl, grads_cl, task = odenet_step(Precision("fp32", None, True, cpu))
    conv = next(m for m in task.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    assert loss_cl == pytest.approx(loss, rel=1e-5)
    for name in grads:
        torch.testing.assert_close(grads_cl[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
    batch = Precision("fp32", None, True, cpu).batch({"x": torch.randn(2, 1, 4, 4), "labels": torch.arange(2)})
    assert batch["x"].is_contiguous(memory_format=torch.channels_last) and batch["labels"].dtype == torch.long


def test_bf16_training_step_is_close_to_fp32():
    cpu = torch.device("cpu")
    loss, grads, _ = odenet_step(Precision("fp32", None, False, cpu))
    loss_bf, grads_bf, _ = odenet_step(Precision("bf16", None, False, cpu))
    assert loss_bf == pytest.approx(loss, rel=0.02)
    assert all(g.dtype == torch.float32 for g in grads_bf.values())
    flat, flat_bf = (torch.cat([g[name].flatten() for name in grads]) for g in (grads, grads_bf))
    assert torch.nn.functional.cosine_similarity(flat_bf, flat, dim=0) > 0.95


def test_trainer_trains_in_bf16_and_channels_last(tmp_path):
    trainer = make_trainer(tmp_path, ode=True, max_epochs=1, precision="bf16", channels_last=True)
    summary = trainer.fit()
    assert torch.isfinite(torch.tensor(summary["final"]["train_loss"]))
    assert trainer.state_dict()["grad_scaler"] is None  # loss scaling is fp16's alone


@pytest.mark.parametrize("settings, device, message", [
    (dict(precision="fp16"), torch.device("cpu"), "trainer.precision=fp16 needs a CUDA device.*use trainer.precision=bf16"),
    (dict(precision="half"), None, "trainer.precision must be fp32, bf16 or fp16, got 'half'"),
])
def test_bad_precision_is_named(settings, device, message):
    with pytest.raises(ConfigError, match=message):
        check_trainer_settings(TrainerConfig(**settings), "epoch", device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_scales_the_loss_and_resumes_the_scale(tmp_path):
    trainer = make_trainer(tmp_path / "cuda", ode=True, max_epochs=1, precision="fp16", tf32=True, device="cuda")
    trainer.fit()
    state = trainer.state_dict()
    assert state["grad_scaler"]["scale"] > 0
    assert torch.backends.cuda.matmul.allow_tf32
    resumed = make_trainer(tmp_path / "cuda2", ode=True, max_epochs=1, precision="fp16", device="cuda")
    resumed.load_state(state)
    assert resumed.precision.scaler.get_scale() == state["grad_scaler"]["scale"]
