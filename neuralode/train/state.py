"""Where a run stands: saved in every checkpoint, so that a resume continues exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps taken
    batch_in_epoch: int = 0  # batches of the current epoch trained on so far
    epoch_loader_state: torch.Tensor | None = None  # the shuffling generator when this epoch began
    # Running sums over the current epoch, for the epoch means in metrics.jsonl:
    train_sums: dict[str, float] = field(default_factory=dict)  # the task's training scalars
    nfe_forward: float = 0  # under DDP these sums are means over the ranks (see distributed.average_progress)
    nfe_backward: float = 0
    n_solves: float = 0
    train_time_s: float = 0.0  # wall time of this epoch's training (data loading included)
    peak_saved_bytes: int = 0  # largest forward pass of this epoch, bytes saved for backward
    best: float | None = None  # best value of the monitored metric so far

    def start_epoch(self, loader_state: torch.Tensor) -> None:
        self.batch_in_epoch, self.epoch_loader_state = 0, loader_state
        self.train_sums, self.train_time_s, self.peak_saved_bytes = {}, 0.0, 0
        self.nfe_forward = self.nfe_backward = self.n_solves = 0

    def add_step(self, scalars: dict[str, float], solves: Any, saved_bytes: int | None) -> None:
        """Count one training step's scalars, solver statistics (a ``StatsCollector``) and memory."""
        for key, value in scalars.items():
            self.train_sums[key] = self.train_sums.get(key, 0.0) + value
        self.nfe_forward += solves.nfe_forward
        self.nfe_backward += solves.nfe_backward
        self.n_solves += solves.n_solves
        if saved_bytes is not None:
            self.peak_saved_bytes = max(self.peak_saved_bytes, saved_bytes)

    def epoch_means(self) -> tuple[dict[str, float], dict[str, float]]:
        """The epoch's training scalars and NFE per step so far (empty before its first step)."""
        n = self.batch_in_epoch
        if not n:
            return {}, {}
        nfe = {"forward": self.nfe_forward / n, "backward": self.nfe_backward / n} if self.n_solves else {}
        return {key: total / n for key, total in self.train_sums.items()}, nfe

    def improved(self, value: float | None, mode: str) -> bool:
        """Whether ``value`` of the monitored metric beats the best so far (it becomes the best)."""
        if value is None or not math.isfinite(value):
            return False
        if self.best is None or (value < self.best if mode == "min" else value > self.best):
            self.best = value
            return True
        return False


def qualified_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
