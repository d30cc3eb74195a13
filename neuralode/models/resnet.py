"""The ResNet baseline of Table 1: the ODE-Net's downsampling and head around 6 residual blocks.

Each block is pre-activation, h + conv(ReLU(GN(conv(ReLU(GN(h)))))), with bias-free 3x3
convolutions as in the reference code; with 64 channels the network has 576,778 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from neuralode.models.odenet import classifier_head, downsampling, norm


class ResBlock(nn.Module):
    """A pre-activation residual block: h + F(h), one discrete step of the ODE-Net's dynamics."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm2 = norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.norm1(h)))
        out = self.conv2(torch.relu(self.norm2(out)))
        return h + out


class ResNet(nn.Module):
    """Downsampling, ``num_blocks`` residual blocks, classifier head."""

    def __init__(self, channels: int = 64, num_blocks: int = 6, num_classes: int = 10):
        super().__init__()
        if channels < 1 or num_blocks < 0 or num_classes < 2:
            raise ValueError(
                f"ResNet needs channels >= 1, num_blocks >= 0, num_classes >= 2; got {channels}, {num_blocks}, {num_classes}"
            )
        self.downsampling = downsampling(channels)
        self.blocks = nn.Sequential(*(ResBlock(channels) for _ in range(num_blocks)))
        self.head = classifier_head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.downsampling(x)))
