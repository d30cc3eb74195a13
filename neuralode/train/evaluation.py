"""Evaluation over a loader, shared by the trainer and ``python -m neuralode eval``."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from neuralode.errors import UserError
from neuralode.ode import collect_stats
from neuralode.tasks.base import Task
from neuralode.train import distributed
from neuralode.train.seeding import preserved_rng_state


def evaluate(task: Task, loader: Iterable, device: torch.device, limit_batches: int | None = None,
             precision: Any = None) -> dict[str, float]:
    """The task's evaluation metrics averaged per example over ``loader`` (at most
    ``limit_batches`` batches), plus ``nfe_forward`` (mean per batch) when it solved ODEs.
    ``precision`` (a :class:`~neuralode.train.precision.Precision`) runs each batch as training does.

    Leaves every random state as it found it, so evaluating does not change training.
    Each task picks its own grad mode (a CNF needs autograd for its divergence). Under DDP each
    rank evaluates its own examples and the sums are added over ranks.
    """
    task.eval()
    totals: dict[str, float] = {}
    examples = batches = 0
    with preserved_rng_state(), collect_stats() as stats:
        for batch in loader:
            if limit_batches is not None and batches >= limit_batches:
                break
            batch = move_to_device(batch, device)
            if precision is None:
                out = dict(task.evaluation_step(batch))
            else:  # the trainer's autocast and memory layout (neuralode/train/precision.py)
                with precision.autocast():
                    out = dict(task.evaluation_step(precision.batch(batch)))
            n = int(out.pop("n"))
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + float(value) * n
            examples += n
            batches += 1
    nfe, n_solves = stats.nfe_forward, stats.n_solves
    if distributed.world_size() > 1:
        totals, counts = distributed.sum_over_ranks(
            totals, {"examples": examples, "batches": batches, "nfe": nfe, "n_solves": n_solves})
        examples, batches, nfe, n_solves = int(counts["examples"]), int(counts["batches"]), counts["nfe"], counts["n_solves"]
    if examples == 0:
        raise UserError("the evaluation set is empty; check the data settings (data.eval_limit, ...)")
    metrics = {key: total / examples for key, total in totals.items()}
    if n_solves:
        metrics["nfe_forward"] = nfe / batches
    return metrics


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``batch`` with ``fn`` applied to every tensor in it (a nested tuple, list or dict)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(map_tensors(item, fn) for item in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(item, fn) for item in batch)
    if isinstance(batch, dict):
        return {key: map_tensors(value, fn) for key, value in batch.items()}
    return batch


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) tuple, list or dict to ``device``."""
    return map_tensors(batch, lambda tensor: tensor.to(device, non_blocking=True))
