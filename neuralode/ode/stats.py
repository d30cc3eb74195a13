"""Solve statistics, readable without wrapping ``func``.

Every solve reports to the collectors that are active at that moment, so a trainer can
count the function evaluations of a whole training step, forward solves and adjoint
backward solves apart::

    with collect_stats() as stats:
        loss = model(x)
        loss.backward()
    stats.nfe_forward, stats.nfe_backward
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


@dataclass
class SolveStats:
    """What one solve did: function evaluations and accepted/rejected steps."""

    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    n_jacobian: int = 0  # implicit methods: Jacobians of func, and LU factorisations
    n_lu: int = 0
    next_step: float | None = None  # adaptive solves: the step the controller would take next
    nfe_per_sample: Any = None  # options["per_sample"]: a (batch,) tensor, each sample's evaluations
    # Variable-order methods (adaptive adams): the order of each accepted step, in solve order.
    orders: list[int] = field(default_factory=list)


@dataclass
class StatsCollector:
    """Totals over every solve inside a ``collect_stats()`` block."""

    nfe_forward: int = 0
    nfe_backward: int = 0
    n_solves: int = 0  # forward solves
    n_accepted: int = 0
    n_rejected: int = 0
    n_jacobian: int = 0
    n_lu: int = 0

    def add(self, stats: SolveStats, backward: bool) -> None:
        if backward:
            self.nfe_backward += stats.nfe
        else:
            self.nfe_forward += stats.nfe
            self.n_solves += 1
        self.n_accepted += stats.n_accepted
        self.n_rejected += stats.n_rejected
        self.n_jacobian += stats.n_jacobian
        self.n_lu += stats.n_lu


# A plain list, not thread-local: on CUDA the autograd engine runs backward (and with it the
# adjoint solves) on its own thread.
_active: list[StatsCollector] = []
_last: dict[str, SolveStats | None] = {"forward": None, "backward": None}


def record(stats: SolveStats, backward: bool = False) -> None:
    _last["backward" if backward else "forward"] = stats
    for collector in _active:
        collector.add(stats, backward)


def last_stats(backward: bool = False) -> SolveStats | None:
    """Statistics of the most recent forward solve (or adjoint backward pass)."""
    return _last["backward" if backward else "forward"]


@contextmanager
def collect_stats():
    """Sum the statistics of every solve inside the ``with`` block (forward and backward NFE,
    solves, steps, Jacobians) into the :class:`StatsCollector` it yields::

        with collect_stats() as stats:
            loss = model(x); loss.backward()
        print(stats.nfe_forward, stats.nfe_backward)
    """
    collector = StatsCollector()
    _active.append(collector)
    try:
        yield collector
    finally:
        _active.remove(collector)


#: The tensor methods by which the host reads a value; on an accelerator each waits for the device.
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


@contextmanager
def count_host_reads():
    """Count the reads of tensor values by the host inside the block (``counter.count``), by
    wrapping :data:`HOST_READS` on ``torch.Tensor`` for its duration. For tests and benchmarks
    of host synchronisation; not thread-safe."""
    import torch

    counter = SimpleNamespace(count=0)
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counted(original):
        def read(tensor, *args, **kwargs):
            counter.count += 1
            return original(tensor, *args, **kwargs)
        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(original))
    try:
        yield counter
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
