"""Error norms, the PI step-size controller and the initial step (Hairer, Norsett, Wanner II.4)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

#: A norm maps the scaled error ``err / (atol + rtol * |y|)`` to a scalar tensor.
Norm = Callable[[torch.Tensor], torch.Tensor]


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean().sqrt()


class ComponentRMSNorm:
    """Largest RMS over the parts of a flattened tuple state.

    A small component (a 1-element log-density, say) is not drowned by a large one. With
    ``include`` set, only those parts count: that is the adjoint's seminorm, which leaves the
    parameter-adjoint channels out of step control (Kidger, Chen and Lyons 2021).
    """

    def __init__(self, sizes: Sequence[int], include: Sequence[int] | None = None):
        self.sizes = list(sizes)
        self.include = list(range(len(sizes))) if include is None else list(include)
        self._segments: dict[torch.device, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def _segment_ids(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
        if device not in self._segments:
            offsets = [0]
            for size in self.sizes:
                offsets.append(offsets[-1] + size)
            end = offsets[max(self.include) + 1]  # elements past the last included part are ignored
            ids = torch.full((end,), len(self.include), dtype=torch.long)  # slot for excluded parts
            counts = torch.zeros(len(self.include) + 1)
            for slot, part in enumerate(self.include):
                ids[offsets[part]:offsets[part + 1]] = slot
                counts[slot] = max(self.sizes[part], 1)
            self._segments[device] = (ids.to(device), counts.to(device), end)
        return self._segments[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.sizes) == 1:
            return rms_norm(x)
        ids, counts, end = self._segment_ids(x.device)
        sq = torch.zeros(len(counts), dtype=x.dtype, device=x.device).index_add_(0, ids, x[:end].pow(2))
        return (sq[:-1] / counts[:-1].to(x.dtype)).max().sqrt()


@dataclass
class PIController:
    """Proportional-integral step-size control on the error norm (1 means "just acceptable").

    ``h_new = h * safety * err**-(icoeff + pcoeff)/k * err_prev**(pcoeff/k)`` with ``k`` the
    order of the error estimate, clipped to ``[min_factor, max_factor]``. The default
    (``pcoeff = 0``) is the classic integral controller; Gustafsson's PI values are
    ``icoeff=0.3, pcoeff=0.4``. After a rejected step the step is not allowed to grow.
    """

    safety: float = 0.9
    min_factor: float = 0.2
    max_factor: float = 10.0
    icoeff: float = 1.0
    pcoeff: float = 0.0

    def __post_init__(self):
        if not 0 < self.safety <= 1:
            raise ValueError(f"safety must lie in (0, 1], got {self.safety}")
        if not 0 < self.min_factor <= 1 <= self.max_factor:
            raise ValueError(f"need 0 < min_factor <= 1 <= max_factor, got {self.min_factor}, {self.max_factor}")

    def factor(self, err: float, prev_err: float, error_order: int, after_reject: bool) -> float:
        if err == 0.0:
            factor = self.max_factor
        else:
            k = error_order
            factor = self.safety * err ** (-(self.icoeff + self.pcoeff) / k) * prev_err ** (self.pcoeff / k)
        factor = min(max(factor, self.min_factor), self.max_factor)
        return min(factor, 1.0) if after_reject else factor


def initial_step(f, t0: float, y0: torch.Tensor, f0: torch.Tensor, error_order: int,
                 rtol: float, atol: float, norm: Norm) -> float:
    """Hairer, Norsett and Wanner's starting step; costs one evaluation of ``f``."""
    scale = y0.abs().mul(rtol).add(atol)
    d0 = norm(y0 / scale).item()
    d1 = norm(f0 / scale).item()
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    f1 = f(t0 + h0, y0 + h0 * f0)
    d2 = norm((f1 - f0) / scale).item() / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / error_order)
    h = min(100 * h0, h1)
    return h if math.isfinite(h) else h0
