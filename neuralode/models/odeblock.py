"""Solver settings shared by every model that integrates an ODE, and the ODE block of an ODE-Net."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

import torch
from torch import nn

from neuralode.ode import odeint, odeint_adjoint


@dataclass
class SolverSettings:
    """How to solve: the `solver` config group, passed to every ODE of a run."""

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    adjoint: bool = True  # False: backpropagate through the solver's operations (the paper's RK-Net)
    options: dict | None = None
    adjoint_method: str | None = None
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    adjoint_options: dict | None = None

    @classmethod
    def from_any(cls, solver: "SolverSettings | Mapping[str, Any] | None") -> "SolverSettings":
        if solver is None:
            return cls()
        if isinstance(solver, cls):
            return solver
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(solver) - known)
        if unknown:
            raise ValueError(f"unknown solver setting(s) {unknown}; valid: {', '.join(sorted(known))}")
        values = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in solver.items()}
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)


def integrate(func: Callable, y0, t: torch.Tensor, solver: "SolverSettings | Mapping | None" = None,
              adjoint_params=None):
    """``odeint`` or ``odeint_adjoint`` as the settings say; returns the solution at every ``t``."""
    s = SolverSettings.from_any(solver)
    kwargs = dict(rtol=s.rtol, atol=s.atol, method=s.method, options=s.options or None)
    if not s.adjoint:
        return odeint(func, y0, t, **kwargs)
    return odeint_adjoint(func, y0, t, **kwargs, adjoint_params=adjoint_params,
                          adjoint_method=s.adjoint_method, adjoint_rtol=s.adjoint_rtol,
                          adjoint_atol=s.adjoint_atol, adjoint_options=s.adjoint_options or None)


class ODEBlock(nn.Module):
    """Maps ``x`` to the solution at ``t1`` of ``dh/dt = func(t, h)``, ``h(0) = x``."""

    def __init__(self, func: nn.Module, solver: "SolverSettings | Mapping | None" = None, t1: float = 1.0):
        super().__init__()
        self.func = func
        self.solver = SolverSettings.from_any(solver)
        self.register_buffer("t", torch.tensor([0.0, float(t1)]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return integrate(self.func, x, self.t.to(x.dtype), self.solver)[-1]
