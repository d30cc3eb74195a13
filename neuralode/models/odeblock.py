"""The ODE block of an ODE-Net: ``x`` to the solution at ``t1`` of ``dh/dt = func(t, h)``.

How it solves (method, tolerances, gradient strategy) is a :class:`neuralode.ode.settings.SolverSettings`,
the same type as the ``solver`` config group.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from neuralode.ode.settings import SolverSettings, solve


class ODEBlock(nn.Module):
    """Maps ``x`` to the solution at ``t1`` of ``dh/dt = func(t, h)``, ``h(0) = x``."""

    def __init__(self, func: nn.Module, solver: SolverSettings | Mapping | None = None, t1: float = 1.0):
        super().__init__()
        self.func = func
        self.solver = SolverSettings.from_any(solver)
        self.register_buffer("t", torch.tensor([0.0, float(t1)]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type) and x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # mixed precision: func computes in half, the solver's state stays fp32
        return solve(self.solver, self.func, x, self.t.to(x.dtype))[-1]
