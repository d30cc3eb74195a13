"""The one-hidden-layer MLP of Table 1.

300 hidden units give about the ODE-Net's parameter count (238,510 vs 208,266); the row the
paper quotes (LeCun et al. 1998, 1.6% error) used 800 (``hidden=800``).
"""

from __future__ import annotations

import torch
from torch import nn


def check_widths(**widths: int) -> None:
    """Refuse a layer width (or count) that is not a positive integer, naming it."""
    for name, size in widths.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive integer, got {size!r}")


class MLP(nn.Module):
    """Flatten, Linear(input_dim, hidden), ReLU, Linear(hidden, num_classes)."""

    def __init__(self, hidden: int = 300, num_classes: int = 10, input_dim: int = 784):
        super().__init__()
        if hidden < 1 or num_classes < 2 or input_dim < 1:
            raise ValueError(f"MLP needs hidden >= 1, num_classes >= 2, input_dim >= 1; got {hidden}, {num_classes}, {input_dim}")
        self.input_dim = input_dim
        self.layers = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.input_dim:
            raise ValueError(f"MLP expects inputs of {self.input_dim} values per example, got {x.shape[1]}")
        return self.layers(x)
