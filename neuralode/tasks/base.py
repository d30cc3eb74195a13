"""The contract between an experiment and the shared trainer.

The trainer (``neuralode.train``) knows nothing about MNIST, spirals or flows: it only calls
the methods below. Anything an experiment needs beyond them (losses, metrics, sampling)
lives in its task.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn


class Task(nn.Module):
    """A model with its training loss and evaluation metrics.

    Subclasses implement :meth:`training_step` and :meth:`evaluation_step`. The trainer
    moves every tensor in a batch to the run's device before calling them, counts ODE
    function evaluations around them (``neuralode.ode.collect_stats``) and logs what they
    return.
    """

    #: Evaluation metric that decides which checkpoint is ``best.pt``.
    monitor: str = "loss"
    #: ``"min"`` or ``"max"``: which direction of :attr:`monitor` is better.
    monitor_mode: str = "min"

    def parameter_groups(self) -> Iterable[torch.nn.Parameter] | list[dict[str, Any]]:
        """What the trainer's optimiser is built with: the parameters (the default), or torch's
        parameter groups (dicts with ``params`` and per-group settings such as ``lr``) for a task
        whose parts train at different rates (SDE-Net's drift and diffusion nets)."""
        return self.parameters()

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Return ``{"loss": scalar tensor to minimise, **other scalars to log}``."""
        raise NotImplementedError

    def evaluation_step(self, batch: Any) -> dict[str, float]:
        """Return metric means over this batch and ``"n"``, the number of examples in it.

        The trainer averages each metric over the evaluation set weighted by ``n`` and logs
        it as ``test/<name>``.
        """
        raise NotImplementedError

    def figures(self, batch: Any) -> dict[str, Any]:
        """Optional matplotlib figures (name -> Figure) logged to TensorBoard after evaluation."""
        return {}
