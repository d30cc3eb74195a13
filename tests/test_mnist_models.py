"""The Table 1 models (ODE-Net, RK-Net, ResNet, MLP), the classification task and its configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from neuralode.models.mlp import MLP
from neuralode.models.odenet import ConcatConv2d, ODEFunc, ODENet, classifier_head, downsampling
from neuralode.models.resnet import ResNet
from neuralode.ode import collect_stats
from neuralode.ode.settings import SolverSettings
from neuralode.tasks.classification import ClassificationTask

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_reference_code():
    # PAPER.md, Table 1: the authors' code gives these counts with 64 channels
    assert num_params(nn.ModuleList([downsampling(64), classifier_head(64, 10)])) == 132_874
    assert num_params(ODENet()) == 208_266
    assert num_params(ODENet(solver={"gradient": "direct"})) == 208_266  # RK-Net: same network
    assert num_params(ResNet()) == 576_778
    for hidden in (300, 800):
        assert num_params(MLP(hidden=hidden)) == 784 * hidden + hidden + hidden * 10 + 10


def test_forward_shapes():
    x = torch.rand(3, 1, 28, 28)
    assert downsampling(8)(x).shape == (3, 8, 6, 6)
    for net in (ODENet(channels=8, num_classes=7), ResNet(channels=8, num_blocks=2, num_classes=7), MLP(16, num_classes=7)):
        assert net(x).shape == (3, 7)
    with pytest.raises(ValueError, match="784"):
        MLP()(torch.rand(2, 1, 14, 14))


def test_concat_conv_sees_time():
    torch.manual_seed(0)
    conv, x = ConcatConv2d(4, 4), torch.randn(2, 4, 5, 5)
    assert conv(torch.tensor(0.0), x).shape == x.shape
    assert not torch.allclose(conv(torch.tensor(0.0), x), conv(torch.tensor(1.0), x))
    # t enters as a constant extra channel: t * (weights on that channel, summed over the kernel)
    w_time = conv.conv.weight[:, 0].sum(dim=(1, 2))
    interior = conv(torch.tensor(1.0), x) - conv(torch.tensor(0.0), x)
    assert torch.allclose(interior[:, :, 2, 2], w_time.expand(2, 4), atol=1e-6)


def test_resnet_without_blocks_is_downsampling_then_head():
    torch.manual_seed(0)
    net, x = ResNet(channels=8, num_blocks=0), torch.rand(2, 1, 28, 28)
    assert torch.allclose(net(x), net.head(net.downsampling(x)))


def tiny_odenet(gradient: str) -> ODENet:
    torch.manual_seed(0)
    # fixed steps keep the adjoint's backward solve short (tight dopri5 takes ~600 evaluations)
    solver = SolverSettings(method="rk4", options={"step_size": 0.05}, gradient=gradient)
    return ODENet(channels=4, num_classes=10, solver=solver).double()


def test_odenet_adjoint_and_rknet_gradients_agree():
    torch.manual_seed(0)
    x, y = torch.rand(2, 1, 28, 28, dtype=torch.float64), torch.tensor([3, 7])
    grads, stats = {}, {}
    for gradient in ("adjoint", "direct", "checkpoint"):
        task = ClassificationTask(tiny_odenet(gradient))
        with collect_stats() as stats[gradient]:
            task.training_step((x, y))["loss"].backward()
        grads[gradient] = torch.cat([p.grad.flatten() for p in task.parameters()])
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in task.parameters())
    assert stats["adjoint"].nfe_forward > 0 and stats["adjoint"].nfe_backward > 0  # ODE-Net: adjoint solve
    assert stats["direct"].nfe_forward > 0 and stats["direct"].nfe_backward == 0  # RK-Net: through the solver
    # The adjoint gives the gradient of the exact flow, backprop that of the discrete solve;
    # they meet as the step shrinks (slowly: ReLU kinks in f). At h = 0.05 they differ by
    # about 0.6%; a missing or wrong term in the backward pass gives an O(1) difference.
    difference = (grads["adjoint"] - grads["direct"]).abs().max() / grads["direct"].abs().max()
    assert difference < 0.02
    # Checkpointing replays the same steps: the discrete gradient, to rounding.
    torch.testing.assert_close(grads["checkpoint"], grads["direct"], rtol=1e-9, atol=1e-12)
    assert stats["checkpoint"].nfe_backward > 0
    ode_grad = [p.grad for p in task.net.ode.parameters()]
    assert any(g.abs().sum() > 0 for g in ode_grad), "the ODE block must receive gradient"


def test_odefunc_keeps_the_shape():
    assert ODEFunc(8)(torch.tensor(0.5), torch.randn(2, 8, 6, 6)).shape == (2, 8, 6, 6)


class _Logits(nn.Module):
    """A 'network' that returns its input, so the task's metrics can be checked by hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_classification_task_loss_and_metrics():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 2])  # two right, two wrong
    task = ClassificationTask(_Logits())
    train = task.training_step((logits, labels))
    assert torch.allclose(train["loss"], F.cross_entropy(logits, labels))
    assert train["accuracy"].item() == pytest.approx(0.5)
    metrics = task.evaluation_step((logits, labels))
    assert metrics == pytest.approx({"loss": F.cross_entropy(logits, labels).item(), "accuracy": 0.5, "error": 0.5, "n": 4})
    assert (task.monitor, task.monitor_mode) == ("error", "min")


@pytest.mark.parametrize(("name", "net_class"), [("odenet", ODENet), ("resnet", ResNet), ("mlp", MLP)])
def test_model_configs_build_the_reference_models(name, net_class):
    solver = {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3, "gradient": "adjoint"}
    cfg = OmegaConf.create({"solver": solver, "model": OmegaConf.load(CONFIGS / f"{name}.yaml")})
    task = instantiate(cfg.model)
    assert isinstance(task, ClassificationTask) and isinstance(task.net, net_class)
    expected = {"odenet": 208_266, "resnet": 576_778, "mlp": 238_510}[name]
    assert num_params(task) == expected
    if net_class is ODENet:  # ${solver} reaches the ODE block (solving is tested above)
        assert task.net.ode.solver == SolverSettings(**solver)
    else:
        out = task.training_step((torch.rand(2, 1, 28, 28), torch.tensor([1, 2])))
        assert torch.isfinite(out["loss"])
