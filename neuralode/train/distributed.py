"""Data-parallel training over several processes, as started by ``torchrun``.

    torchrun --standalone --nproc_per_node=4 -m neuralode train experiment=mnist_odenet

Every process (rank) holds a replica of the task and trains it on its share of each batch;
DistributedDataParallel averages the gradients during backward, so the replicas stay equal.
``data.batch_size`` stays the *global* batch: each of N ranks loads ``batch_size / N`` examples
of the very batch a single process would load (the shuffle comes from the trainer's seeded
generator, identical on every rank). A run on N processes therefore follows the single-process
run with the same config up to floating-point summation order (and, with an adaptive solver,
the step sizes each rank picks for its part of the batch; see docs/distributed.md), the learning-rate rule
(``scale_lr`` of ``data.batch_size``) needs no change, and checkpoints move freely between a
DDP run and a single process.

The trainer's training scalars and NFE are averaged over the ranks, its evaluation metrics
computed over the union of the ranks' examples; rank 0 alone writes metrics.jsonl, TensorBoard
events, checkpoints, summary.json and the progress bar.

This module holds the pieces: the process group, the samplers that split batches across
ranks, the DDP wrapper of a task, and small collectives for logging. The trainer uses them
when :func:`world_size` is above one; with one process none of this runs.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from neuralode.train.config import ConfigError
from neuralode.train.seeding import seed_everything

log = logging.getLogger(__name__)

#: Rank r > 0 draws its dropout and augmentation from seed + RANK_SEED_STRIDE * r (rank 0 keeps
#: the run's seed), so that replicas see different random masks for their different examples.
RANK_SEED_STRIDE = 10_000


def world_size_from_env() -> int:
    """The number of processes torchrun started (1 when not started by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_process_group(timeout_s: float = 1800) -> None:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT): gloo for CPU tensors, plus nccl for CUDA tensors when every
    process of this machine has a GPU of its own, so a run may use either device
    (``device=cpu`` trains on gloo)."""
    if is_initialized():
        return
    missing = [key for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if key not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world_size_from_env()} but {', '.join(missing)} is not set: start distributed "
            "runs with `torchrun --nproc_per_node=N -m neuralode train ...`"
        )
    backend = "gloo"
    if _one_gpu_per_process():
        torch.cuda.set_device(local_rank())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))


def _one_gpu_per_process() -> bool:
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", world_size_from_env()))
    return torch.cuda.is_available() and torch.cuda.device_count() >= local_processes


def destroy_process_group() -> None:
    if is_initialized():
        dist.destroy_process_group()


def device_for_rank(device: torch.device) -> torch.device:
    """The device of this rank: CPU stays CPU; ``cuda`` (or ``auto`` on a GPU machine) becomes
    ``cuda:LOCAL_RANK``, one GPU per process."""
    if device.type != "cuda":
        return device
    if not _one_gpu_per_process():
        raise ConfigError(
            f"device={device} under torchrun needs one GPU per process, but this machine shows "
            f"{torch.cuda.device_count()} GPU(s) to {os.environ.get('LOCAL_WORLD_SIZE', '?')} processes: "
            "lower --nproc_per_node or train on device=cpu"
        )
    if device.index is not None:
        raise ConfigError(
            f"device={device} under torchrun: each process uses the GPU of its LOCAL_RANK; pass device=cuda "
            "(or auto) and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", local_rank())


@contextmanager
def local_rank_zero_first() -> Iterator[None]:
    """Let the first process of each machine run the block (e.g. download a data set) before
    the others run it (and find the files there)."""
    if world_size() > 1 and local_rank() != 0:
        dist.barrier()
    yield
    if world_size() > 1 and local_rank() == 0:
        dist.barrier()


# -- collectives for logging and checkpoints (objects: a few numbers, once per evaluation) --

def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src``, on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    boxes: list[Any] = [None] * world_size()
    dist.all_gather_object(boxes, obj)
    return boxes


def sum_over_ranks(*dicts: dict[str, float]) -> list[dict[str, float]]:
    """Each of ``dicts`` summed key by key over the ranks (a key a rank lacks counts as 0), in
    one collective call however many dicts there are."""
    totals: list[dict[str, float]] = [{} for _ in dicts]
    for parts in gather(dicts):
        for total, part in zip(totals, parts):
            for key, value in part.items():
                total[key] = total.get(key, 0.0) + value
    return totals


def average_progress(p) -> None:
    """Make every rank's running sums (a :class:`~neuralode.train.state.Progress`) the mean over
    ranks. Sums are linear, so the epoch means stay right as each rank keeps adding its own
    steps, and every rank (hence the checkpoint, written from rank 0) holds the same values: a
    resume is exact."""
    train, solves = sum_over_ranks(p.train_sums, {"nfe_forward": p.nfe_forward, "nfe_backward": p.nfe_backward,
                                                  "n_solves": p.n_solves})
    p.train_sums = {key: value / world_size() for key, value in train.items()}
    p.nfe_forward, p.nfe_backward, p.n_solves = (solves[key] / world_size() for key in ("nfe_forward", "nfe_backward",
                                                                                       "n_solves"))
    p.peak_saved_bytes = max(gather(p.peak_saved_bytes))


# -- batches ------------------------------------------------------------------------------

class ShardedShuffle(Sampler[int]):
    """This rank's share of the shuffle a single process would draw.

    At each epoch it draws ``torch.randperm(n, generator=generator)`` exactly as a shuffling
    DataLoader does, pads it by wrapping around to a multiple of ``world_size``, and yields
    every ``world_size``-th index from ``rank``. With a per-rank batch of ``B / N``, batch k of
    rank r holds positions ``r, r + N, ...`` of the single-process batch k of size ``B``: the
    ranks together train on the same global batches, and resuming replays the same order
    because the generator's state is in the checkpoint.
    """

    def __init__(self, n: int, rank: int, world_size: int, generator: torch.Generator, global_batch_size: int):
        self.n, self.rank, self.world_size, self.generator = n, rank, world_size, generator
        self.global_batch_size = global_batch_size

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        total = len(self) * self.world_size
        order = (order * math.ceil(total / self.n))[:total]  # wrap around: every rank gets as many
        # A single process's RandomSampler, asked for the short last batch of an epoch, runs to
        # its end, and there draws one more permutation from the generator: draw it at the
        # same batch so that the next epoch's shuffle is the same as a single process's.
        short_last_batch = self.n % self.global_batch_size != 0
        last_batch_starts = (self.n // self.global_batch_size) * (self.global_batch_size // self.world_size)
        for i, index in enumerate(order[self.rank :: self.world_size]):
            if short_last_batch and i == last_batch_starts:
                torch.randperm(self.n, generator=self.generator)
            yield index


class StridedShard(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` below ``n``, no padding: each example of the
    first ``n`` is evaluated by exactly one rank."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def per_rank_batch_size(batch_size: int, world: int, what: str = "data.batch_size") -> int:
    if batch_size % world:
        raise ConfigError(
            f"{what}={batch_size} is the global batch and must split evenly over {world} processes; "
            f"use a multiple of {world} (e.g. {what}={batch_size - batch_size % world or world})"
        )
    return batch_size // world


def shard_train_loader(loader: DataLoader, generator: torch.Generator) -> DataLoader:
    """``loader`` (the DataModule's single-process training loader) split across ranks: the
    same dataset, collate function and workers, 1/N of each batch on each rank."""
    world = world_size()
    batch_size = per_rank_batch_size(loader.batch_size, world)
    sampler = ShardedShuffle(len(loader.dataset), rank(), world, generator, loader.batch_size)
    return _with_sampler(loader, sampler, batch_size, generator)


def shard_loaders(train: DataLoader, evaluation: DataLoader, generator: torch.Generator,
                  limit_eval_batches: int | None) -> tuple[DataLoader, DataLoader]:
    """The DataModule's training and evaluation loaders, split across ranks (unchanged with one
    process)."""
    if world_size() == 1:
        return train, evaluation
    train, evaluation = shard_train_loader(train, generator), shard_eval_loader(evaluation, limit_eval_batches)
    log.info("data-parallel over %d processes: %d training and %d evaluation examples a batch per process",
             world_size(), train.batch_size, evaluation.batch_size)
    return train, evaluation


def shard_eval_loader(loader: DataLoader, limit_batches: int | None) -> DataLoader:
    """The examples a single process would evaluate (its first ``limit_batches`` batches, or
    all), split across ranks without repetition; the per-rank batch is 1/N of the global one,
    rounded up."""
    world = world_size()
    n = len(loader.dataset)
    if limit_batches is not None:
        n = min(n, limit_batches * loader.batch_size)
    return _with_sampler(loader, StridedShard(n, rank(), world), math.ceil(loader.batch_size / world), None)


def _with_sampler(loader: DataLoader, sampler: Sampler, batch_size: int, generator: torch.Generator | None) -> DataLoader:
    return DataLoader(
        loader.dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=generator,  # the DataLoader also draws its workers' base seed from it, as the original does
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers,
    )


# -- the model ----------------------------------------------------------------------------

class TrainingStep(nn.Module):
    """``task.training_step`` as a module's forward.

    DDP prepares its gradient all-reduce in ``forward``, so the training step must run through
    the DDP wrapper; this is the module it wraps. Its parameters are the task's own (no copy):
    the optimiser, the checkpoints (``task.state_dict()``) and evaluation keep using ``task``.
    """

    def __init__(self, task: nn.Module):
        super().__init__()
        self.task = task

    def forward(self, batch: Any) -> dict[str, Any]:
        return self.task.training_step(batch)


def replica(task: nn.Module, device: torch.device, seed: int, find_unused_parameters: bool = False) -> nn.Module | None:
    """Under torchrun, the task's training step as this rank's DDP replica (see
    :func:`data_parallel`), with this rank's own dropout and augmentation draws (rank 0 keeps
    the run's seed); None with one process."""
    if world_size() == 1:
        return None
    if rank() > 0:
        seed_everything(seed + RANK_SEED_STRIDE * rank())
    return data_parallel(task, device, find_unused_parameters)


def data_parallel(task: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """The task's training step wrapped in DistributedDataParallel.

    DDP starts every replica from rank 0's parameters and buffers and all-reduces each
    parameter's gradient as soon as autograd accumulates it. The adjoint method fits that as
    long as the parameters are passed to ``odeint_adjoint`` explicitly (the models pass
    ``func.parameters()``): its backward returns their gradients as outputs of one autograd
    Function, autograd accumulates them into ``.grad`` and DDP's hooks fire.
    """
    return nn.parallel.DistributedDataParallel(
        TrainingStep(task),
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )
