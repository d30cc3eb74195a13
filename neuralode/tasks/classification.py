"""Image classification: cross-entropy loss, accuracy and error (the Table 1 metric)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralode.tasks.base import Task


class ClassificationTask(Task):
    """Trains ``net`` (images -> logits) with cross-entropy; ``best.pt`` has the lowest test error."""

    monitor = "error"
    monitor_mode = "min"

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        accuracy = (logits.detach().argmax(dim=1) == y).float().mean()
        return {"loss": loss, "accuracy": accuracy}

    @torch.no_grad()
    def evaluation_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = batch
        logits = self.net(x)
        accuracy = (logits.argmax(dim=1) == y).float().mean().item()
        return {
            "loss": F.cross_entropy(logits, y).item(),
            "accuracy": accuracy,
            "error": 1.0 - accuracy,  # a fraction; Table 1 prints it as a percentage
            "n": len(y),
        }
