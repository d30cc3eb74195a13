"""A minimal data module: two datasets and how to batch them."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def seed_worker(worker_id: int) -> None:
    """Give every DataLoader worker its own, reproducible numpy/python seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class DataModule:
    """Subclasses build ``train_dataset()`` and ``eval_dataset()``; batching is shared.

    The trainer passes a seeded ``generator`` (shuffle order) and, for distributed runs,
    a ``sampler``.
    """

    def __init__(self, batch_size: int = 128, eval_batch_size: int | None = None, num_workers: int = 0):
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def eval_dataset(self) -> Dataset:
        raise NotImplementedError

    def train_dataloader(self, generator: torch.Generator | None = None, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            self.train_dataset(),
            batch_size=self.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=generator,
            num_workers=self.num_workers,
            worker_init_fn=seed_worker,
            drop_last=False,
        )

    def eval_dataloader(self, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            self.eval_dataset(),
            batch_size=self.eval_batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=self.num_workers,
        )
