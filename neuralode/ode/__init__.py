"""The ODE core: explicit Runge-Kutta solvers, step-size controllers, dense output, events, and
gradients by backprop through the solver, by the adjoint method of Chen et al. (2018,
Algorithm 1) or by checkpointing.

The API follows torchdiffeq's, so that switching is a change of import::

    from neuralode.ode import odeint, odeint_adjoint, odeint_event

Layout, one concern a file:
    problem.py      user input -> one flat state, increasing float time; tolerances, norms, callbacks
    methods.py      every method by name, and the solver interface
    tableaux.py     Butcher tableaux as data
    runge_kutta.py  the generic explicit RK solver (init / step / error_norm / interpolant)
    controllers.py  PID and constant step-size controllers
    loop.py         the one integration loop, with event and per-step hooks
    api.py          odeint / odeint_adjoint: argument checks, then a gradient strategy:
    adjoint.py      ... "adjoint" (Algorithm 1)
    checkpoint.py   ... "checkpoint" (replay from sqrt(N) stored states)
    events.py       odeint_event: gradients through the event time
    dense.py        odeint_dense: the solution as a function of time
    settings.py     SolverSettings: one solve's settings as a config value, checked here

This package imports nothing but torch, and nothing from the rest of neuralode.
"""

from neuralode.ode.api import odeint, odeint_adjoint
from neuralode.ode.dense import odeint_dense
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
from neuralode.ode.events import odeint_event
from neuralode.ode.settings import GRADIENTS, SolverSettings
from neuralode.ode.stats import SolveStats, StatsCollector, collect_stats, last_stats
from neuralode.ode.methods import ADAPTIVE_METHODS, ALIASES, FIXED_METHODS, METHODS, make_solver
from neuralode.ode.tableaux import TABLEAUX, ButcherTableau

__all__ = [
    "odeint", "odeint_adjoint", "odeint_event", "odeint_dense", "SolverSettings", "GRADIENTS",
    "collect_stats", "last_stats", "SolveStats", "StatsCollector",
    "ButcherTableau", "TABLEAUX", "METHODS", "make_solver", "ALIASES", "ADAPTIVE_METHODS", "FIXED_METHODS",
    "ODESolverError", "NonFiniteStateError", "StepSizeUnderflowError", "MaxStepsExceededError",
    "InvalidTimeError", "StateMismatchError", "InvalidOptionError", "AdjointParamsError",
]
