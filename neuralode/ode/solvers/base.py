"""The solver interface the loops rely on, as a base class: every method's solver derives from
``Solver``, implements the abstract steps and keeps the defaults it does not need to change.

A solver is built afresh for each solve (it may hold options and state between steps), and
``make_solver`` checks that it is complete: a class that misses an abstract method cannot be
built (``TypeError`` naming it), one without ``name``, ``adaptive``, ``order`` or
``error_order`` is refused with ``TypeError`` naming the attribute.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import torch

from neuralode.ode.problem import CALLBACKS, Field

#: What every solver states, set on the class or in ``__init__``.
REQUIRED = ("name", "adaptive", "order", "error_order")


class Solver(ABC):
    """One method's steps.

    name, adaptive, order, error_order  what the controller and the messages need
    callbacks        the ``callback_*`` hooks the loop calls for it (fixed steps: only callback_step)
    extra_options    option names it takes beyond the controller's, checked by ``configure``
    multistep        what ``init``/``next_init`` return is a history (with ``slope``, ``tensors``,
                     ``with_tensors``), stored at checkpoints, since a step cannot restart from y
    differentiable   False: no gradient through its steps (scipy_solver)
    step_size_option what a fixed-step user lowers when the state blows up (named in the error)
    """

    callbacks: tuple[str, ...] = CALLBACKS
    extra_options: tuple[str, ...] = ()
    multistep = False
    differentiable = True
    step_size_option = "step_size"

    def configure(self, options: dict, prefix: str = "") -> None:
        """Check and take the ``extra_options`` given (``InvalidOptionError`` naming a bad one)."""

    def prepare(self, controller, rtol, atol, problem):
        """Called before each solve with the (flat) tolerances and the problem; returns the
        controller to use."""
        return controller

    def count_into(self, stats) -> None:
        """Add the solver's own counts (Jacobians, factorisations) to a solve's statistics."""

    def order_taken(self, step) -> int:
        """The order an accepted step took, for ``SolveStats.orders``; 0: a fixed-order method."""
        return 0

    def slope_of(self, carried) -> torch.Tensor:
        """The slope at the current point, from what ``init``/``next_init`` returned."""
        return carried

    @abstractmethod
    def init(self, field: Field, t: float, y: torch.Tensor, perturb: int = 0):
        """What the first step from (t, y) starts from (a slope, or a multistep history)."""

    @abstractmethod
    def step(self, field: Field, t: float, y: torch.Tensor, h: float, carried, perturb_end: bool = False):
        """One attempted step from ``t`` to ``t + h``; the result has ``y1``."""

    @abstractmethod
    def next_init(self, field: Field, t1: float, step, perturb: int = 0):
        """What the step after an accepted ``step`` starts from."""

    @abstractmethod
    def error_norm(self, step, h: float, scale, norm) -> torch.Tensor:
        """The step's error ratio (adaptive solvers; at most 1 accepts)."""

    @abstractmethod
    def interpolant(self, field: Field, t: float, h: float, y0: torch.Tensor, step, f1):
        """The dense output inside an accepted step (adaptive solvers)."""


class TableauSolver(Solver):
    """A Runge-Kutta solver: its tableau says its name, orders and whether it adapts, and so which
    callbacks the loop calls (fixed steps are never accepted or rejected: callback_step only)."""

    def __init__(self, tableau):
        self.tableau = tableau
        self.name, self.adaptive = tableau.name, tableau.adaptive
        self.order, self.error_order = tableau.order, tableau.error_order
        self.callbacks = CALLBACKS if self.adaptive else CALLBACKS[:1]


def check_complete(solver: Solver) -> Solver:
    """``solver``, or ``TypeError`` naming what it lacks."""
    if not isinstance(solver, Solver):
        raise TypeError(f"{type(solver).__name__} is not a neuralode.ode.solvers.base.Solver")
    missing = [name for name in REQUIRED if not hasattr(solver, name)]
    if missing:
        raise TypeError(f"solver {type(solver).__name__} does not set {', '.join(missing)}")
    return solver
