"""A toy event data set for the Poisson process latent ODE (the paper's Figure 7).

Each sequence is an inhomogeneous Poisson process on ``[0, t_end]`` with a periodic rate
``lambda(t) = base_rate * (1 + sin(omega * t + phase))`` and its own random phase, so the
rate is a hidden state a model has to infer from the events. Events are drawn by thinning
(Lewis and Shedler): candidates from the maximal rate, each kept with probability
``lambda(t) / max lambda``. Items follow the irregular-series format of
:mod:`neuralode.data.irregular`::

    times  (B, T)     event times, sorted; padding repeats the last event time (0 if none)
    values (B, T, 0)  events carry no value
    mask   (B, T)     True for real events
    t_end  (B,)       end of the observation window
    grid_times (B, G), true_rate (B, G)   the true rate on a regular grid, for plots and metrics
"""

from __future__ import annotations

import math

import torch

from neuralode.data.irregular import GeneratedSplitDataModule


def periodic_rate(t: torch.Tensor, phase: torch.Tensor, base_rate: float, omega: float) -> torch.Tensor:
    """lambda(t) for each sequence: ``t`` (N, T), ``phase`` (N,)."""
    return base_rate * (1.0 + torch.sin(omega * t + phase[:, None]))


def check_event_args(n_sequences: int, t_end: float, base_rate: float, n_grid: int) -> None:
    """Refuse arguments that generate no data, naming the ``data`` setting."""
    if isinstance(n_sequences, bool) or not isinstance(n_sequences, int) or n_sequences < 1:
        raise ValueError(f"data.n_sequences must be a positive integer, got {n_sequences!r}")
    for name, value in (("t_end", t_end), ("base_rate", base_rate)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"data.{name} must be a positive number, got {value!r}")
    if n_grid < 2:
        raise ValueError(f"data.n_grid must be at least 2 (the grid's two ends), got {n_grid}")


def make_events(
    n_sequences: int = 500,
    t_end: float = 10.0,
    base_rate: float = 2.0,
    omega: float = 1.0,
    n_grid: int = 100,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Generate the event data set (float32); same arguments, same tensors."""
    check_event_args(n_sequences, t_end, base_rate, n_grid)
    gen = torch.Generator().manual_seed(seed)
    phase = torch.rand(n_sequences, generator=gen) * 2 * math.pi
    max_rate = 2 * base_rate
    n_candidates = torch.poisson(torch.full((n_sequences,), max_rate * t_end), generator=gen).long()
    width = max(int(n_candidates.max()), 1)
    candidates = torch.rand(n_sequences, width, generator=gen) * t_end
    real = torch.arange(width)[None, :] < n_candidates[:, None]
    keep = real & (torch.rand(n_sequences, width, generator=gen) * max_rate < periodic_rate(candidates, phase, base_rate, omega))

    # Sort kept events to the front of each row in time order, then cut the common width.
    times = torch.where(keep, candidates, torch.full_like(candidates, math.inf)).sort(dim=1).values
    n_events = keep.sum(dim=1)
    width = max(int(n_events.max()), 1)
    times, mask = times[:, :width], torch.arange(width)[None, :] < n_events[:, None]
    last = torch.where(n_events > 0, times.gather(1, (n_events - 1).clamp_min(0)[:, None])[:, 0], torch.zeros(n_sequences))
    times = torch.where(mask, times, last[:, None])

    grid = torch.linspace(0.0, t_end, n_grid).expand(n_sequences, -1).clone()
    return {
        "times": times,
        "values": torch.zeros(n_sequences, width, 0),
        "mask": mask,
        "t_end": torch.full((n_sequences,), float(t_end)),
        "grid_times": grid,
        "true_rate": periodic_rate(grid, phase, base_rate, omega),
    }


class EventsDataModule(GeneratedSplitDataModule):
    """The toy events split into ``n_sequences - n_eval`` training and ``n_eval`` evaluation sequences."""

    def __init__(
        self,
        n_sequences: int = 500,
        n_eval: int = 100,
        t_end: float = 10.0,
        base_rate: float = 2.0,
        omega: float = 1.0,
        n_grid: int = 100,
        seed: int = 0,
        batch_size: int = 50,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ):
        check_event_args(n_sequences, t_end, base_rate, n_grid)  # now, not when the data is first generated
        event_args = dict(n_sequences=n_sequences, t_end=t_end, base_rate=base_rate, omega=omega, n_grid=n_grid, seed=seed)
        super().__init__(make_events, event_args, "n_sequences", n_eval, batch_size, eval_batch_size, num_workers)
