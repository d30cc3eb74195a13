"""One evaluation's metrics as a typed record, from which both the metrics.jsonl line and the
TensorBoard scalars are derived (rather than string prefixes added in one place and parsed
back in another)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Record:
    epoch: int  # 1-based: the epoch the evaluation ended or fell in
    step: int  # optimiser steps so far
    train: dict[str, float] = field(default_factory=dict)  # the task's training scalars, epoch mean so far
    nfe: dict[str, float] = field(default_factory=dict)  # forward / backward per training step (ODE tasks)
    test: dict[str, float] = field(default_factory=dict)  # the task's evaluation metrics
    lr: float = 0.0
    time_s: dict[str, float] = field(default_factory=dict)  # "epoch" (training so far), "eval"
    memory_mb: dict[str, float] = field(default_factory=dict)  # "peak_saved_tensors", "peak_rss", ...

    def as_json(self) -> dict[str, Any]:
        """The metrics.jsonl line (the keys every table reads: train_loss, test_error, ...)."""
        line: dict[str, Any] = {"epoch": self.epoch, "step": self.step}
        line.update({f"train_{k}": v for k, v in self.train.items()})
        line.update({f"nfe_{k}": v for k, v in self.nfe.items()})
        line.update({f"test_{k}": v for k, v in self.test.items()})
        line["lr"] = self.lr
        line.update({f"{k}_time_s": v for k, v in self.time_s.items()})
        line.update({f"{k}_mb": v for k, v in self.memory_mb.items()})
        return line

    def scalars(self) -> dict[str, float]:
        """The TensorBoard scalars, by tag."""
        tags = {f"train/{k}": v for k, v in self.train.items()}
        tags.update({f"nfe/{k}": v for k, v in self.nfe.items()})
        tags.update({f"test/{k}": v for k, v in self.test.items()})
        tags["optim/lr"] = self.lr
        tags.update({f"time/{k}_s": v for k, v in self.time_s.items()})
        tags.update({f"memory/{k}_mb": v for k, v in self.memory_mb.items()})
        # One memory curve to compare runs: the device's peak where there is one.
        peak = self.memory_mb.get("cuda_max_allocated", self.memory_mb.get("peak_saved_tensors"))
        if peak is not None:
            tags["memory/peak_mb"] = peak
        return tags

    def summary_line(self) -> str:
        shown = [f"epoch {self.epoch} step {self.step}"]
        shown += [f"{k} {v:.4g}" for k, v in self.as_json().items() if k.startswith(("train_", "test_", "nfe_"))]
        shown.append(f"{self.time_s.get('epoch', 0.0):.1f}s")
        return " | ".join(shown)


def run_summary(history: list[dict[str, Any]], monitor: str, best: float | None, **run: Any) -> dict[str, Any]:
    """summary.json: what trained and how far (``run``: name, run_dir, task, ..., in that order),
    then the metrics.jsonl line with the best value of ``monitor`` and the last line."""
    best_line = next((line for line in history if line.get(monitor) == best), None)
    return {**run, "monitor": monitor, "best": best_line, "final": history[-1]}
