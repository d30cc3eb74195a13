"""``method="scipy_solver"``: ``scipy.integrate.solve_ivp`` as an ODE method, as torchdiffeq wraps it
(``options={"solver": "LSODA"}``, or any of solve_ivp's methods: RK45, RK23, DOP853, Radau, BDF).

scipy is an optional extra (``pip install -e '.[scipy]'``), imported only when this method runs.
scipy integrates in float64 NumPy on the CPU, so no gradient passes through the solver: outputs
are constants to autograd. ``gradient="adjoint"`` does give gradients (the backward solve may
itself use scipy_solver). In the loop (``loop.py``) one "step" is one solve_ivp call over the
whole span (or up to the next ``jump_t``, where scipy should restart), and outputs inside it come
from scipy's dense output.
"""

from __future__ import annotations

import math

import torch

from neuralode.ode.errors import InvalidOptionError
from neuralode.ode.solvers.base import Solver
from neuralode.ode.solvers.runge_kutta import Interpolant

SCIPY_SOLVERS = ("LSODA", "RK45", "RK23", "DOP853", "Radau", "BDF")


def import_solve_ivp():
    try:
        from scipy.integrate import solve_ivp
    except ImportError as error:
        raise ImportError("method='scipy_solver' needs scipy, an optional extra of neuralode: "
                          "pip install -e '.[scipy]'") from error
    return solve_ivp


class _ScipyStep:
    def __init__(self, y1: torch.Tensor, solution):
        self.y1, self.solution = y1, solution


class _WholeSpan:
    """Steps from ``t`` straight to the end (or to the next ``step_t``/``jump_t``): scipy chooses
    its own steps inside. Wraps the PID controller, whose knots and tolerances it keeps."""

    adaptive = True

    def __init__(self, pid):
        self.pid = pid

    def initial_step(self, field, t0, y0, f0, error_order) -> float:
        return math.inf

    def next_time(self, t: float, h: float, t_end: float):
        return self.pid.next_time(t, math.inf, t_end)

    def adapt(self, solver, step, t, h, y0):
        return True, math.inf, 0.0

    def underflow(self, t, h, span) -> bool:
        return False


class ScipySolver(Solver):
    name = "scipy_solver"
    adaptive = True
    differentiable = False  # direct/checkpoint gradients are refused (api.py)
    order = 5
    error_order = 5
    callbacks = ()
    extra_options = ("solver",)

    def __init__(self):
        self.solver = "LSODA"
        self.rtol, self.atol = 1e-7, 1e-9  # odeint's defaults, until prepare gives the solve's
        self.min_step, self.max_step, self.first_step = 0.0, math.inf, None

    def configure(self, options: dict, prefix: str = "") -> None:
        solver = options.get("solver", self.solver)
        if solver not in SCIPY_SOLVERS:
            raise InvalidOptionError(f"{prefix}option 'solver' must be one of solve_ivp's methods "
                                     f"{', '.join(SCIPY_SOLVERS)}, got {solver!r}")
        self.solver = solver

    def prepare(self, controller, rtol, atol, problem):
        """Tolerances (per element, as NumPy, when given per component) and step bounds for scipy."""
        as_scipy = lambda tol: tol.detach().double().cpu().numpy() if isinstance(tol, torch.Tensor) else tol  # noqa: E731
        self.rtol, self.atol = as_scipy(rtol), as_scipy(atol)
        self.min_step, self.max_step = controller.min_step, controller.max_step
        self.first_step = controller.first_step if controller.first_step and math.isfinite(controller.first_step) else None
        return _WholeSpan(controller)

    def init(self, field, t: float, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        return field(t, y, perturb)  # checks func's output once (the loop does); scipy restarts anyway

    def step(self, field, t: float, y: torch.Tensor, h: float, f0, perturb_end: bool = False) -> _ScipyStep:
        solve_ivp = import_solve_ivp()
        if not math.isfinite(h):
            raise InvalidOptionError("method='scipy_solver' does not search for events (event_fn): use another method")
        shape, dtype, device = y.shape, y.dtype, y.device

        def fun(s, x):
            with torch.no_grad():
                state = torch.as_tensor(x, device=device).to(dtype).view(shape)
                return field(float(s), state).reshape(-1).double().cpu().numpy()

        extra = {"min_step": self.min_step} if self.min_step else {}  # LSODA's only
        if self.first_step is not None:
            extra["first_step"] = min(self.first_step, h)
        solution = solve_ivp(fun, (t, t + h), y.detach().reshape(-1).double().cpu().numpy(), method=self.solver,
                             rtol=self.rtol, atol=self.atol, max_step=self.max_step, dense_output=True, **extra)
        if solution.status != 0:
            raise RuntimeError(f"scipy_solver ({self.solver}) failed at t={t:.6g}: {solution.message}")
        y1 = torch.as_tensor(solution.y[:, -1], device=device).to(dtype).view(shape)
        return _ScipyStep(y1, solution.sol)

    def next_init(self, field, t1: float, step: _ScipyStep, perturb: int = 0) -> torch.Tensor:
        return step.y1.new_empty(0)  # nothing is carried: each solve_ivp call starts afresh

    def error_norm(self, step, h, scale, norm) -> torch.Tensor:
        return torch.zeros(())

    def interpolant(self, field, t: float, h: float, y0: torch.Tensor, step: _ScipyStep, f1) -> "ScipyInterpolant":
        return ScipyInterpolant(t, h, y0, step)


class ScipyInterpolant(Interpolant):
    """scipy's dense output (what solve_ivp's ``t_eval`` returns too)."""

    def __init__(self, t: float, h: float, y0: torch.Tensor, step: _ScipyStep):
        self.t, self.h, self.y0, self.y1, self.solution = t, h, y0, step.y1, step.solution

    def _between(self, thetas: list[float]) -> torch.Tensor:
        times = [self.t + th * self.h for th in thetas]
        values = torch.as_tensor(self.solution(times).T.copy(), device=self.y0.device).to(self.y0.dtype)
        return values.view(len(times), *self.y0.shape)
