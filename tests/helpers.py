"""Small helpers shared by test files."""

from __future__ import annotations

from typing import Callable

import pytest
import torch


def slow_when(costly: bool, *values, id: str | None = None):
    """A parametrize case, marked slow (left to the full suite, not `make test-fast`) when ``costly``."""
    return pytest.param(*values, marks=[pytest.mark.slow] if costly else [], id=id)


def train_steps(task: torch.nn.Module, batches: Callable[[int], object], steps: int, lr: float,
                window: int) -> tuple[float, float]:
    """Adam on ``task.training_step``; the mean loss of the first and of the last ``window`` steps."""
    optimizer = torch.optim.Adam(task.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        loss = task.training_step(batches(step))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses[:window]) / window, sum(losses[-window:]) / window
