"""Every ODE method by name. Each solver derives from ``solver.Solver`` (the interface the loops
rely on); ``make_solver`` builds a fresh one and checks it is complete. ``ExplicitRungeKutta``
(``runge_kutta.py``) is the reference: an explicit method is one tableau in ``tableaux.py``, and
a method is added by listing a factory for its solver here; the shared tests
(``tests/ode/problems.py``) pick it up.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from neuralode.ode.solvers.adams import AdaptiveAdams, FixedGridAdams
from neuralode.ode.errors import InvalidOptionError
from neuralode.ode.solvers.implicit import ImplicitRungeKutta
from neuralode.ode.solvers.implicit_tableaux import IMPLICIT_TABLEAUX
from neuralode.ode.solvers.runge_kutta import ExplicitRungeKutta
from neuralode.ode.solvers.scipy_solver import ScipySolver
from neuralode.ode.solvers.base import check_complete
from neuralode.ode.solvers.tableaux import TABLEAUX

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
    return check_complete(METHODS[name]())
