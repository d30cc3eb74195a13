"""The ODE core: explicit Runge-Kutta solvers, step-size controllers, dense output, events, and
gradients by backprop through the solver, by the adjoint method of Chen et al. (2018,
Algorithm 1) or by checkpointing.

The API follows torchdiffeq's, so that switching is a change of import::

    from neuralode.ode import odeint, odeint_adjoint, odeint_event

Layout, one concern a file:
    problem.py      user input -> one flat state, increasing float time; tolerances, norms, callbacks
    solvers/        the solvers, one family a file, on the Solver base class (solvers/base.py):
                    explicit RK (tableaux as data), implicit RK (Newton with a torch.func Jacobian),
                    Adams multistep, scipy's solve_ivp (imported only when it runs), SDE steps
    methods.py      every method by name
    controllers.py  PID and constant step-size controllers; the starting-step and PID rules
    loop.py         the host integration loop, with event and per-step hooks (sdeint's too)
    batched_loop.py the batched, sync-free loop (per-sample steps), on the same rules
    setup.py        a solve's options and tolerances checked, its controller, which loop runs it
    gradients.py    the gradient strategies (direct, adjoint, checkpoint) as objects, by name:
    adjoint.py      ... "adjoint" (Algorithm 1)
    checkpoint.py   ... "checkpoint" (replay from sqrt(N) stored states)
    api.py          odeint / odeint_adjoint: the arguments checked, then the strategy named
    events.py       odeint_event: gradients through the event time
    dense.py        odeint_dense: the solution as a function of time
    settings.py     SolverSettings: one solve's settings as a config value, checked here
    sde.py          sdeint: Ito SDEs on a fixed grid (Euler-Maruyama, Milstein), diagonal noise,
                    solved by loop.py with solvers/stochastic.py

This package imports nothing but torch (and scipy, lazily, for scipy_solver), and nothing from the
rest of neuralode.
"""

import importlib

# Names are imported on first use (PEP 562), so that reading ``neuralode.ode.settings`` (the
# trainer's config schema) does not import torch: a mistyped override is refused in a second.
_HOME = {
    "api": ("odeint", "odeint_adjoint"),
    "gradients": ("GRADIENTS",),
    "dense": ("odeint_dense",),
    "events": ("odeint_event",),
    "sde": ("sdeint", "BrownianGrid", "SDE_METHODS"),
    "settings": ("SolverSettings",),
    "stats": ("SolveStats", "StatsCollector", "collect_stats", "count_host_reads", "last_stats"),
    "methods": ("ADAPTIVE_METHODS", "ALIASES", "FIXED_METHODS", "METHODS", "make_solver"),
    "solvers.tableaux": ("TABLEAUX", "ButcherTableau"),
    "solvers.implicit": ("NewtonError",),
    "errors": ("ODESolverError", "NonFiniteStateError", "StepSizeUnderflowError", "MaxStepsExceededError",
               "InvalidTimeError", "StateMismatchError", "InvalidOptionError", "AdjointParamsError", "TimeLimitError"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'neuralode.ode' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"neuralode.ode.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))


__all__ = list(_MODULE_OF)
