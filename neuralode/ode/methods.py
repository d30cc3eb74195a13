"""Every ODE method by name, and the solver interface the loop (``loop.py``) relies on.

A solver is an object with
    name, adaptive, order, error_order  what the controller and the messages need;
    callbacks                           the ``callback_*`` hooks the loop calls for it;
    extra_options                       option names it accepts beyond the controller's;
    configure(options)                  checks and takes those options (``InvalidOptionError``);
    init / step / next_init             the state carried between steps, and one attempted step;
    error_norm / interpolant            the error estimate (adaptive) and dense output;
and optionally
    multistep                           True: what init/next_init return is a history (with
                                        ``slope``, ``tensors``, ``with_tensors``), stored at
                                        checkpoints since a step cannot restart from y alone;
    prepare(controller, rtol, atol)     called before each solve with the (flat) tolerances;
                                        returns the controller to use.
    differentiable                      False: no gradient through its steps (scipy_solver), so
                                        gradient="direct"/"checkpoint" by name are refused (the
                                        default warns and returns constants, as torchdiffeq).
``ExplicitRungeKutta`` (``runge_kutta.py``) is the reference; a method is added by listing a
factory for its solver here, and the shared tests (``tests/ode/problems.py``) pick it up.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from neuralode.ode.adams import AdaptiveAdams, FixedGridAdams
from neuralode.ode.errors import InvalidOptionError
from neuralode.ode.implicit import ImplicitRungeKutta
from neuralode.ode.implicit_tableaux import IMPLICIT_TABLEAUX
from neuralode.ode.runge_kutta import ExplicitRungeKutta
from neuralode.ode.scipy_solver import ScipySolver
from neuralode.ode.tableaux import TABLEAUX

#: name -> a factory of a fresh solver (a solver may hold options, so each solve gets its own).
METHODS: dict[str, Callable[[], object]] = {name: partial(ExplicitRungeKutta, tab) for name, tab in TABLEAUX.items()}
# Adams multistep methods (adams.py): torchdiffeq's fixed-grid ones, and the adaptive one.
METHODS["explicit_adams"] = partial(FixedGridAdams, "explicit_adams", implicit=False)
METHODS["implicit_adams"] = partial(FixedGridAdams, "implicit_adams", implicit=True)
METHODS["adams"] = AdaptiveAdams
METHODS["scipy_solver"] = ScipySolver  # scipy.integrate.solve_ivp; scipy is imported when it runs
# Implicit Runge-Kutta (implicit.py): torchdiffeq's fixed-grid ones, and radau5 (adaptive Radau IIA 5).
METHODS.update({name: partial(ImplicitRungeKutta, tab) for name, tab in IMPLICIT_TABLEAUX.items()})
#: Other names for the same methods: torchdiffeq's, and ours before it.
ALIASES = {"heun": "heun2", "dop853": "dopri8", "fixed_adams": "implicit_adams"}
FIXED_METHODS = tuple(name for name, make in METHODS.items() if not make().adaptive)
ADAPTIVE_METHODS = tuple(name for name, make in METHODS.items() if make().adaptive)


def make_solver(method: str | None, prefix: str = ""):
    """A fresh solver for ``method`` (``None`` is dopri5), or an error listing the methods."""
    name = ALIASES.get(method, method) if method is not None else "dopri5"
    if name not in METHODS:
        what = f"{prefix}method={method!r} is not an ODE method" if prefix else f"unknown ODE method {method!r}"
        raise InvalidOptionError(
            f"{what}; adaptive methods: {', '.join(ADAPTIVE_METHODS)}; "
            f"fixed-step methods: {', '.join(FIXED_METHODS)}"
        )
    return METHODS[name]()
