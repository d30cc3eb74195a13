"""The ODE core: explicit Runge-Kutta solvers, adaptive step control, dense output and the
adjoint method of Chen et al. (2018), Algorithm 1.

The API follows torchdiffeq's, so that switching is a change of import::

    from neuralode.ode import odeint, odeint_adjoint

This package imports nothing but torch, and nothing from the rest of neuralode.
"""

from neuralode.ode.adjoint import odeint_adjoint
from neuralode.ode.errors import (
    AdjointParamsError,
    InvalidOptionError,
    InvalidTimeError,
    MaxStepsExceededError,
    NonFiniteStateError,
    ODESolverError,
    StateMismatchError,
    StepSizeUnderflowError,
)
from neuralode.ode.solve import odeint
from neuralode.ode.stats import SolveStats, StatsCollector, collect_stats, last_stats
from neuralode.ode.tableaux import ADAPTIVE_METHODS, FIXED_METHODS, TABLEAUX, ButcherTableau

__all__ = [
    "odeint", "odeint_adjoint", "collect_stats", "last_stats", "SolveStats", "StatsCollector",
    "ButcherTableau", "TABLEAUX", "ADAPTIVE_METHODS", "FIXED_METHODS",
    "ODESolverError", "NonFiniteStateError", "StepSizeUnderflowError", "MaxStepsExceededError",
    "InvalidTimeError", "StateMismatchError", "InvalidOptionError", "AdjointParamsError",
]
