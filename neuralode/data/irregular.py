"""What the irregular-series data sets (spirals, events) share: their items and their split.

Irregular-series batch format
-----------------------------
Every series carries its own sorted time stamps; a dataset item is a dict of tensors and the
default collate stacks them into::

    times   (B, T)     observation times, non-decreasing in each row, all >= 0
    values  (B, T, D)  observed values at those times
    mask    (B, T)     True where an observation is real; padding (False) sits at the end of
                       a row and repeats the row's last real time so rows stay sorted

Time 0 is the reference time of every series (the latent ODE's z0 lives there). Each data set
adds its own keys (the spirals' noise-free truth, the events' true rate).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from neuralode.data.base import DataModule


class TensorDictDataset(Dataset):
    """A dataset whose item ``i`` is ``{name: tensor[i]}`` for a dict of equally long tensors."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        lengths = {name: len(t) for name, t in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"all tensors must have the same first dimension, got {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: t[i] for name, t in self.tensors.items()}


class GeneratedSplitDataModule(DataModule):
    """A generated data set whose last ``n_eval`` series are the evaluation split.

    ``generate(**generate_args)`` returns the whole set as a dict of tensors; it runs once, on
    first use. ``size_arg`` names the argument that holds the number of series, so that a bad
    ``n_eval`` is reported against it.
    """

    def __init__(
        self,
        generate: Callable[..., dict[str, torch.Tensor]],
        generate_args: dict,
        size_arg: str,
        n_eval: int,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int,
    ):
        super().__init__(batch_size, eval_batch_size, num_workers)
        n_series = generate_args[size_arg]
        if not 1 <= n_eval < n_series:
            raise ValueError(f"data.n_eval must lie in [1, {size_arg}={n_series}), got {n_eval}")
        self.generate = generate
        self.generate_args = generate_args
        self.n_eval = n_eval
        self._data: dict[str, torch.Tensor] | None = None

    def _split(self, train: bool) -> TensorDictDataset:
        if self._data is None:
            self._data = self.generate(**self.generate_args)
        part = slice(None, -self.n_eval) if train else slice(-self.n_eval, None)
        return TensorDictDataset({name: t[part] for name, t in self._data.items()})

    def train_dataset(self) -> TensorDictDataset:
        return self._split(train=True)

    def eval_dataset(self) -> TensorDictDataset:
        return self._split(train=False)
