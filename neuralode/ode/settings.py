"""How to solve, as one value: the `solver` config group, a model's ODE block and a paper table
all describe a solve with a ``SolverSettings`` and check it here, with the ODE core's own rules,
before anything runs.

It is a plain dataclass with OmegaConf-friendly field types, so the trainer uses it directly as
the schema of the ``solver`` group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, Mapping, Optional

from neuralode.ode.errors import InvalidOptionError


@dataclass
class SolverSettings:
    """One solve's method, tolerances, options and gradient strategy."""

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    # The paper's ODE-Net trains by the adjoint; "direct" is its RK-Net (backprop through the
    # solver's operations), "checkpoint" the exact discrete gradient in sqrt(steps) memory.
    gradient: str = "adjoint"
    options: Dict[str, Any] = field(default_factory=dict)  # e.g. {step_size: 0.25} for rk4
    # The adjoint's backward solve; None: the forward's settings.
    adjoint_method: Optional[str] = None
    adjoint_rtol: Optional[float] = None
    adjoint_atol: Optional[float] = None
    adjoint_options: Dict[str, Any] = field(default_factory=dict)  # e.g. {norm: seminorm}

    @classmethod
    def from_any(cls, solver: "SolverSettings | Mapping[str, Any] | None") -> "SolverSettings":
        """Settings from a mapping (a config node, a dict) or ``None`` (the defaults), checked.
        An instance is returned as it is: ``odeint`` checks what it is given anyway, and a model
        that solves at every forward pass should not re-check its settings each time."""
        if solver is None:
            return cls().validate()
        if isinstance(solver, cls):
            return solver
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(solver) - known)
        if unknown:
            hint = " ('adjoint: true/false' is now 'gradient: adjoint/direct')" if "adjoint" in unknown else ""
            raise InvalidOptionError(f"unknown solver setting(s) {unknown}; valid: {', '.join(sorted(known))}{hint}")
        values = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in solver.items()}
        for key in ("options", "adjoint_options"):
            if values.get(key) is None:
                values[key] = {}
        return cls(**values).validate()

    def validate(self) -> "SolverSettings":
        """Raise ``InvalidOptionError`` naming the setting, its value and what is allowed."""
        # The same checks odeint makes; imported here so that the config schema, which imports
        # this module, does not import torch (the ODE core below settings.py never imports it).
        from neuralode.ode.gradients import GRADIENTS
        from neuralode.ode.setup import AdjointSettings, check_gradient_arguments, check_solve_arguments

        if self.gradient not in GRADIENTS:
            raise InvalidOptionError(f"solver.gradient={self.gradient!r} is not a gradient strategy; "
                                     f"choose one of {', '.join(GRADIENTS)}")
        check_solve_arguments(self.method, self.rtol, self.atol, self.options, prefix="solver.")
        adjoint = AdjointSettings(self.adjoint_method, self.adjoint_rtol, self.adjoint_atol,
                                  self.adjoint_options or None)  # {} is the config's "none given"
        check_gradient_arguments(self.gradient, self.options, adjoint, self.method, prefix="solver.")
        from neuralode.ode.methods import make_solver

        if GRADIENTS[self.gradient].through_solver and not make_solver(self.method).differentiable:
            raise InvalidOptionError(
                f"solver.method={self.method} passes no gradient through its steps, so solver.gradient="
                f"{self.gradient} cannot train with it; set solver.gradient=adjoint (the backward solve runs "
                "it too) or choose a differentiable method (e.g. solver.method=dopri5)")
        if self.gradient != "adjoint":
            return self
        a_method = self.adjoint_method or self.method
        a_options = {k: v for k, v in self.adjoint_options.items() if not (k == "norm" and v == "seminorm")}
        check_solve_arguments(a_method, self.rtol if self.adjoint_rtol is None else self.adjoint_rtol,
                              self.atol if self.adjoint_atol is None else self.adjoint_atol, a_options,
                              prefix="solver.adjoint_")
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    def odeint_kwargs(self) -> dict:
        """Keyword arguments of ``odeint`` for these settings."""
        kwargs: dict[str, Any] = dict(rtol=self.rtol, atol=self.atol, method=self.method,
                                      options=dict(self.options) or None, gradient=self.gradient)
        if self.gradient == "adjoint":
            kwargs.update(adjoint_method=self.adjoint_method, adjoint_rtol=self.adjoint_rtol,
                          adjoint_atol=self.adjoint_atol, adjoint_options=dict(self.adjoint_options) or None)
        return kwargs


def solve(settings: "SolverSettings | Mapping | None", func: Callable, y0, t,
          adjoint_params=None):
    """``odeint(func, y0, t)`` as ``settings`` say; returns the solution at every ``t``."""
    from neuralode.ode.api import odeint

    s = SolverSettings.from_any(settings)
    kwargs = s.odeint_kwargs()
    if s.gradient != "direct":
        kwargs["adjoint_params"] = adjoint_params
    return odeint(func, y0, t, **kwargs)
