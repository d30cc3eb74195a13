"""ODE-Net and RK-Net for MNIST (Table 1): downsample, one ODE block, classify.

The reference architecture (the authors' ``odenet_mnist.py``), 64 channels:

    downsampling  Conv(1,c,3,1) GN ReLU Conv(c,c,4,2,1) GN ReLU Conv(c,c,4,2,1)   28 -> 26 -> 13 -> 6
    ODE block     dh/dt = f(t, h), f = GN ReLU ConcatConv GN ReLU ConcatConv GN,   t in [0, 1]
    head          GN ReLU global-average-pool Linear(c, 10)

ODE-Net and RK-Net are the same network: ODE-Net takes gradients with the adjoint method
(``solver.gradient=adjoint``, memory constant in the number of steps), RK-Net backpropagates
through the solver's operations (``solver.gradient=direct``). With 64 channels both have
208,266 parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from neuralode.models.odeblock import ODEBlock
from neuralode.ode.settings import SolverSettings


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups, as in the reference code."""
    return nn.GroupNorm(min(32, channels), channels)


class ConcatConv2d(nn.Module):
    """A convolution that also sees the time t, as one extra constant input channel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel_size, stride, padding)

    def forward(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        time = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0], 1, *x.shape[2:])
        return self.conv(torch.cat([time, x], dim=1))


class ODEFunc(nn.Module):
    """The dynamics f(t, h): GN ReLU ConcatConv GN ReLU ConcatConv GN, same shape in and out."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.norm1, self.conv1 = norm(channels), ConcatConv2d(channels, channels)
        self.norm2, self.conv2 = norm(channels), ConcatConv2d(channels, channels)
        self.norm3 = norm(channels)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = self.conv1(t, torch.relu(self.norm1(h)))
        h = self.conv2(t, torch.relu(self.norm2(h)))
        return self.norm3(h)


def downsampling(channels: int = 64, in_channels: int = 1) -> nn.Sequential:
    """28x28 images to ``channels`` feature maps of 6x6 (132,096 parameters for 64 channels)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, 1),
        norm(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 4, 2, 1),
        norm(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 4, 2, 1),
    )


def classifier_head(channels: int = 64, num_classes: int = 10) -> nn.Sequential:
    """Feature maps to class logits: GN ReLU global-average-pool Linear."""
    return nn.Sequential(
        norm(channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


class ODENet(nn.Module):
    """Downsampling, one ODE block integrated from 0 to ``t1``, classifier head.

    ``solver`` is a :class:`SolverSettings` or a mapping of its fields (e.g. Hydra's
    ``${solver}``); ``gradient="direct"`` makes this the RK-Net.
    """

    def __init__(
        self,
        channels: int = 64,
        num_classes: int = 10,
        solver: SolverSettings | Mapping | None = None,
        t1: float = 1.0,
    ):
        super().__init__()
        if channels < 1 or num_classes < 2:
            raise ValueError(f"ODENet needs channels >= 1 and num_classes >= 2, got {channels} and {num_classes}")
        self.downsampling = downsampling(channels)
        self.ode = ODEBlock(ODEFunc(channels), solver, t1=t1)
        self.head = classifier_head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ode(self.downsampling(x)))
