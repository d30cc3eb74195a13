"""One evaluation's metrics as a typed record, from which both the metrics.jsonl line and the
TensorBoard scalars are derived (rather than string prefixes added in one place and parsed
back in another). :func:`json_key` is the one place that names a metric's metrics.jsonl key."""

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
        line: dict[str, Any] = {"epoch": self.epoch, "step": self.step, **self.measured()}
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

    def measured(self) -> dict[str, float]:
        """The training, NFE and test metrics under their metrics.jsonl keys (what a log line and
        TensorBoard's HPARAMS tab show)."""
        return {**{json_key("train", k): v for k, v in self.train.items()},
                **{json_key("nfe", k): v for k, v in self.nfe.items()},
                **{json_key("test", k): v for k, v in self.test.items()}}

    def summary_line(self) -> str:
        shown = [f"epoch {self.epoch} step {self.step}"]
        shown += [f"{k} {v:.4g}" for k, v in self.measured().items()]
        shown.append(f"{self.time_s.get('epoch', 0.0):.1f}s")
        return " | ".join(shown)


def json_key(group: str, metric: str) -> str:
    """A metric's key in metrics.jsonl and summary.json: ``json_key("test", "error")`` is
    ``test_error``, the name every table reads."""
    return f"{group}_{metric}"


def run_summary(history: list[dict[str, Any]], monitor: str, best: float | None, **run: Any) -> dict[str, Any]:
    """summary.json: what trained and how far (``run``: name, run_dir, task, ..., in that order),
    then the metrics.jsonl line with the best value of the test metric ``monitor`` and the last line."""
    key = json_key("test", monitor)
    best_line = next((line for line in history if line.get(key) == best), None)
    return {**run, "monitor": key, "best": best_line, "final": history[-1]}
