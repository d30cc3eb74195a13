"""Training that cannot go on: a loss that is not finite, or the ODE solver failing inside a
training step. Both are reported as :class:`TrainingError`, naming the step and what to change."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from neuralode.errors import UserError
from neuralode.ode import MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError

REMEDIES = ("lower the learning rate (optim.optimizer.lr), clip gradients (trainer.grad_clip_norm) or change "
            "the solver tolerances (solver.rtol, solver.atol)")


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to change."""


def checked_loss(out: Any, task_name: str, step: int, epoch: int) -> torch.Tensor:
    """The loss of ``task.training_step``'s output, refused if missing or not finite."""
    if not isinstance(out, dict) or "loss" not in out:
        keys = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise TrainingError(f"{task_name}.training_step must return a dict with a 'loss' tensor; got {keys}")
    loss = out["loss"]
    if not torch.isfinite(loss).all():
        raise TrainingError(f"the training loss is {loss.item()} at step {step} (epoch {epoch}); {REMEDIES}")
    return loss


@contextmanager
def solver_failure_is_divergence(step: int, epoch: int, last_loss: float | None) -> Iterator[None]:
    """The ODE solver's failures during training (a non-finite state, a step size that
    underflows, too many steps) mean the model diverged: say where, and what to change."""
    try:
        yield
    except (NonFiniteStateError, StepSizeUnderflowError, MaxStepsExceededError) as error:
        before = f" (last logged training loss {last_loss:.4g})" if last_loss is not None else ""
        raise TrainingError(f"training diverged at step {step} (epoch {epoch}){before}: the ODE solver failed: "
                            f"{str(error).split('; ')[0]}. {REMEDIES[0].upper()}{REMEDIES[1:]}") from error
