"""How a solve is set up: the options of each kind of method checked by name and value, the
tolerances, and a ``Setup`` that builds the controller and runs the loop (the host loop, or the
batched one of ``batched_loop.py``). ``odeint`` and ``SolverSettings.validate`` both check here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from neuralode.ode import stats as _stats
from neuralode.ode.controllers import ConstantSteps, PIDController, check_grid, uniform_grid
from neuralode.ode.batched_loop import BATCHED_LOOP_OPTIONS, check_batched_options, integrate_batched, uses_batched_loop
from neuralode.ode.errors import InvalidOptionError
from neuralode.ode.loop import Solution, integrate
from neuralode.ode.methods import make_solver
from neuralode.ode.problem import (
    DEFAULT_MAX_NUM_STEPS,
    Problem,
    check_tolerances,
    flat_tolerance,
    make_norm,
)

# Options of each kind of method (torchdiffeq's names; min_factor/max_factor are its dfactor/ifactor).
ADAPTIVE_OPTIONS = ("first_step", "min_step", "max_step", "max_num_steps", "max_seconds", "norm", "safety", "min_factor",
                    "max_factor", "dfactor", "ifactor", "icoeff", "pcoeff", "dcoeff", "step_t", "jump_t", "dtype") + BATCHED_LOOP_OPTIONS
FIXED_OPTIONS = ("step_size", "grid_constructor", "interp", "perturb", "max_num_steps", "max_seconds", "norm", "dtype")
GRADIENT_OPTIONS = ("checkpoint_every",)  # gradient="checkpoint" only


def _positive(value, allow_inf=False) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and (
        math.isfinite(value) or (allow_inf and value == math.inf))


def check_options(solver, options: dict | None, prefix: str = "") -> dict:
    """Options in one canonical form; unknown names and bad values are refused by name."""
    options = dict(options or {})
    valid = (ADAPTIVE_OPTIONS if solver.adaptive else FIXED_OPTIONS) + tuple(solver.extra_options) + GRADIENT_OPTIONS
    unknown = sorted(set(options) - set(valid))
    if unknown:
        kind = "adaptive" if solver.adaptive else "fixed-step"
        raise InvalidOptionError(f"unknown {prefix}option(s) {unknown} for {kind} method {solver.name!r}; "
                                 f"valid options: {', '.join(valid)}")
    for alias, name in (("dfactor", "min_factor"), ("ifactor", "max_factor")):
        if alias in options:
            if name in options:
                raise InvalidOptionError(f"give {prefix}options {name!r} or its torchdiffeq name {alias!r}, not both")
            options[name] = options.pop(alias)
    for key in ("step_size", "first_step", "max_seconds"):
        if options.get(key) is not None and not _positive(options[key]):
            raise InvalidOptionError(f"{prefix}option {key!r} must be a positive finite number, got {options[key]!r}")
    if options.get("min_step") is not None and not (options["min_step"] == 0 or _positive(options["min_step"])):
        raise InvalidOptionError(f"{prefix}option 'min_step' must be zero or positive, got {options['min_step']!r}")
    if options.get("max_step") is not None and not _positive(options["max_step"], allow_inf=True):
        raise InvalidOptionError(f"{prefix}option 'max_step' must be positive (inf allowed), got {options['max_step']!r}")
    if (options.get("min_step") or 0) > (options.get("max_step") or math.inf):
        raise InvalidOptionError(f"{prefix}options min_step={options['min_step']} > max_step={options['max_step']}")
    if options.get("step_size") is not None and options.get("grid_constructor") is not None:
        raise InvalidOptionError(f"give {prefix}options 'step_size' or 'grid_constructor', not both")
    if options.get("grid_constructor") is not None and not callable(options["grid_constructor"]):
        raise InvalidOptionError(f"{prefix}option 'grid_constructor' must be callable (func, y0, t) -> grid")
    if options.get("interp", "linear") not in ("linear", "cubic"):
        raise InvalidOptionError(f"{prefix}option 'interp' must be 'linear' or 'cubic', got {options['interp']!r}")
    for key in ("max_num_steps", "checkpoint_every"):
        value = options.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise InvalidOptionError(f"{prefix}option {key!r} must be a positive integer, got {value!r}")
    if "safety" in options and not (isinstance(options["safety"], (int, float)) and 0 < options["safety"] <= 1):
        raise InvalidOptionError(f"{prefix}option 'safety' must lie in (0, 1], got {options['safety']!r}")
    lo, hi = options.get("min_factor", 0.2), options.get("max_factor", 10.0)
    if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 < lo <= 1 <= hi):
        raise InvalidOptionError(f"{prefix}options need 0 < min_factor <= 1 <= max_factor, got {lo!r}, {hi!r}")
    if options.get("dtype") not in (None, torch.float32, torch.float64):
        raise InvalidOptionError(f"{prefix}option 'dtype' (the time dtype) must be torch.float32 or torch.float64")
    norm = options.get("norm")
    if norm is not None and not callable(norm) and norm != "rms":
        hint = " ('seminorm' applies to the adjoint: pass it in adjoint_options)" if norm == "seminorm" else ""
        raise InvalidOptionError(f"{prefix}option 'norm' must be 'rms' or a callable, got {norm!r}{hint}")
    if norm == "rms":
        options.pop("norm")
    for key in ("step_t", "jump_t"):
        if options.get(key) is not None:
            values = torch.as_tensor(options[key]).detach().reshape(-1).double().cpu().tolist()
            if not all(math.isfinite(v) for v in values):
                raise InvalidOptionError(f"{prefix}option {key!r} holds non-finite times")
            options[key] = values
    if set(options.get("step_t") or ()) & set(options.get("jump_t") or ()):
        raise InvalidOptionError(f"{prefix}options 'step_t' and 'jump_t' must not share a time")
    check_batched_options(solver, options, prefix)
    solver.configure({k: options[k] for k in solver.extra_options if k in options}, prefix)
    return options


def check_state_precision(setup: "Setup", y0: torch.Tensor) -> None:
    """A half-precision state stalls adaptive error control at tolerances it cannot resolve
    (float16's eps is 1e-3): the step shrinks until max_num_steps. Refused below 10 eps, unless
    under torch.autocast, where a half state is the mixed-precision run's choice (the trainer's
    bf16 ODE-Net trains so)."""
    if (not setup.solver.adaptive or y0.dtype not in (torch.float16, torch.bfloat16)
            or torch.is_autocast_enabled(y0.device.type)):
        return
    rtols = setup.rtol if isinstance(setup.rtol, tuple) else (setup.rtol,)
    rtol = max(float(r.max()) if isinstance(r, torch.Tensor) else float(r) for r in rtols)
    floor = 10 * torch.finfo(y0.dtype).eps
    if rtol < floor:
        raise InvalidOptionError(
            f"y0 is {y0.dtype}, whose precision cannot resolve rtol={rtol:g} (it needs rtol >= {floor:.2g}): "
            f"method {setup.solver.name!r} would shrink its steps without end; give y0 in float32 (under "
            "torch.autocast func's layers still compute in half precision), loosen rtol, or use a fixed-step method")


def check_solve_arguments(method, rtol, atol, options, prefix: str = "") -> None:
    """The checks ``odeint`` makes of its settings, without a problem to solve (config validation)."""
    solver = make_solver(method, prefix)
    check_options(solver, options, prefix)
    check_tolerances(rtol, atol, None, prefix)


@dataclass
class Setup:
    """Method, tolerances and options, checked; builds a fresh controller for each solve."""

    solver: Any  # see methods.py for the interface
    rtol: Any
    atol: Any
    options: dict

    @property
    def interp(self) -> str:
        """Outputs between fixed steps: "linear" (torchdiffeq's default) or "cubic"."""
        return self.options.get("interp", "linear")

    @property
    def batched(self) -> bool:
        """Whether solves run in ``batched_loop.py`` (per-sample steps, or fewer host reads)."""
        return uses_batched_loop(self.options)

    def controller(self, problem: Problem, t: torch.Tensor | None, event: bool, rtol, atol):
        """The step-size controller of one solve; ``rtol``, ``atol`` in the flat state's layout."""
        o = self.options
        if self.solver.adaptive:
            s0 = problem.times[0]
            knots = {k: sorted(v for v in (problem.direction * x for x in o.get(k) or ()) if v > s0)
                     for k in ("step_t", "jump_t")}
            return PIDController(
                rtol, atol, o.get("_norm") or make_norm(o.get("norm"), problem), first_step=o.get("first_step"),
                min_step=o.get("min_step") or 0.0, max_step=o.get("max_step") or math.inf,
                **{k: o[k] for k in ("safety", "min_factor", "max_factor", "icoeff", "pcoeff", "dcoeff") if k in o},
                **knots)
        times = problem.times
        if event:
            if o.get("step_size") is None:
                raise InvalidOptionError(f"event handling with the fixed-step method {self.solver.name!r} needs "
                                         "options['step_size']")
            return ConstantSteps(step_size=o["step_size"])
        if o.get("grid_constructor") is not None:
            user_t = t if t is not None else torch.tensor([problem.user_time(s) for s in times])
            grid = o["grid_constructor"](problem.user_field, problem.user_state(problem.y0), user_t)
            grid = torch.as_tensor(grid).detach().double().cpu().tolist()
            return ConstantSteps(check_grid([problem.direction * g for g in grid], times[0], times[-1]))
        if o.get("step_size") is not None and len(times) > 1:
            steps, limit = (times[-1] - times[0]) / o["step_size"], o.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
            if steps > limit:  # refused before a list of that many times is built
                raise InvalidOptionError(
                    f"step_size={o['step_size']:g} over [t={problem.user_time(times[0]):g}, "
                    f"t={problem.user_time(times[-1]):g}] makes {math.ceil(steps):,} steps, more than "
                    f"max_num_steps={limit:,}; use a larger step_size, or raise options['max_num_steps']")
            return ConstantSteps(uniform_grid(times[0], times[-1], o["step_size"]))
        if len(times) > 1:
            warnings.warn(f"method {self.solver.name!r} got neither options['step_size'] nor "
                          "options['grid_constructor'], so it takes one step between consecutive times of t (as "
                          "torchdiffeq does); give options={'step_size': h} for steps of h", stacklevel=2)
        return ConstantSteps(times)

    def integrate(self, problem: Problem, stats: _stats.SolveStats, t=None, event_fn=None, on_accept=None) -> Solution:
        o = self.options
        rtol, atol = (flat_tolerance(tol, problem, problem.y0, name) for tol, name in ((self.rtol, "rtol"), (self.atol, "atol")))
        if self.batched:
            if event_fn is not None or on_accept is not None:
                raise InvalidOptionError("options 'per_sample'/'sync_every' do not support event_fn or "
                                         "gradient='checkpoint'; drop them or use the default loop")
            norm = o.get("_norm") or make_norm(o.get("norm"), problem)
            return Solution(integrate_batched(problem, self.solver, rtol, atol, norm, o, stats))
        # a solver that needs the tolerances, or steps its own way, may change the controller
        controller = self.solver.prepare(self.controller(problem, t, event_fn is not None, rtol, atol), rtol, atol, problem)
        return integrate(problem, self.solver, controller, stats, interp=self.interp,
                         perturb=bool(o.get("perturb", False)), event_fn=event_fn,
                         max_num_steps=o.get("max_num_steps", DEFAULT_MAX_NUM_STEPS), max_seconds=o.get("max_seconds"),
                         on_accept=on_accept)


def make_setup(method, rtol, atol, options, shapes=None, prefix="") -> Setup:
    solver = make_solver(method, prefix)
    options = check_options(solver, options, prefix)
    rtol, atol = check_tolerances(rtol, atol, shapes, prefix)
    return Setup(solver, rtol, atol, options)


@dataclass(frozen=True)
class AdjointSettings:
    """The ``adjoint_*`` arguments of ``odeint``: the backward solve's method, tolerances, options."""

    method: str | None = None
    rtol: Any = None
    atol: Any = None
    options: dict | None = None

    @property
    def given(self) -> list[str]:
        """The names of the arguments given."""
        return [f"adjoint_{k}" for k in ("method", "rtol", "atol", "options") if getattr(self, k) is not None]


def make_adjoint_setup(setup: Setup, problem: Problem, adjoint: AdjointSettings) -> Setup:
    """The backward solve's settings: the forward's unless the ``adjoint_*`` arguments say otherwise."""
    method, rtol, atol, options = adjoint.method, adjoint.rtol, adjoint.atol, adjoint.options
    solver = make_solver(method) if method is not None else setup.solver
    if options is None:
        # Inherit the forward's options when they fit the backward method, as torchdiffeq does:
        # step_t, jump_t and a grid_constructor are in the user's time, which the backward solve
        # retraces (a discontinuity of f in t is one of the augmented field too); a forward norm
        # is for the forward state, not [z, a, a_theta].
        # per_sample: the backward state [z, a, a_theta] has no batch rows (a_theta sums over them).
        # compile: the backward field calls torch.autograd.grad, which torch.compile cannot trace.
        skip = ("norm", "checkpoint_every", "per_sample", "compile")
        # ... nor the forward method's own options (newton_tol, ...) when the backward method lacks them.
        skip += tuple(k for k in setup.solver.extra_options if k not in solver.extra_options)
        options = {k: v for k, v in setup.options.items() if k not in skip} if solver.adaptive == setup.solver.adaptive else {}
    options = dict(options)
    if options.get("per_sample"):
        raise InvalidOptionError("adjoint_options 'per_sample' cannot apply: the adjoint state [z, a, a_theta] has no "
                                 "batch rows (a_theta sums over the batch); per_sample applies to the forward solve")
    if options.get("compile"):
        raise InvalidOptionError("adjoint_options 'compile' cannot apply: the adjoint's field calls torch.autograd.grad, "
                                 "which torch.compile cannot trace; 'compile' applies to the forward solve")
    seminorm = options.get("norm") == "seminorm"  # check_gradient_arguments: the method is adaptive
    if seminorm:
        options.pop("norm")
    options = check_options(solver, options, "adjoint_")
    if seminorm:
        options["_seminorm"] = True
    rtol, atol = check_tolerances(setup.rtol if rtol is None else rtol, setup.atol if atol is None else atol,
                                  None, "adjoint_")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, (tuple, torch.Tensor)):
            raise InvalidOptionError(f"the adjoint's {name} must be a number; give adjoint_{name}= explicitly when "
                                     "the forward tolerance is per component")
    return Setup(solver, rtol, atol, options)


def check_gradient_arguments(gradient: str, options: dict, adjoint: AdjointSettings, method: str | None,
                             prefix: str = "") -> None:
    """The rules between the gradient strategy and the other arguments, for ``odeint`` and for
    ``SolverSettings`` alike (``prefix`` "solver." names config keys): ``checkpoint_every`` is
    the checkpoint's, the ``adjoint_*`` arguments the adjoint's, and a seminorm needs an adaptive
    backward method."""
    if "checkpoint_every" in options and gradient != "checkpoint":
        raise InvalidOptionError(f"{prefix}options.checkpoint_every applies to gradient='checkpoint' only, not "
                                 f"gradient={gradient!r}; remove it or set {prefix}gradient=checkpoint")
    if gradient != "adjoint":
        if adjoint.given:
            raise InvalidOptionError(f"{prefix}{adjoint.given[0]} applies to gradient='adjoint' only, not "
                                     f"gradient={gradient!r}; remove it or set {prefix}gradient=adjoint")
        return
    backward = adjoint.method or method
    if (adjoint.options or {}).get("norm") == "seminorm" and not make_solver(backward, f"{prefix}adjoint_").adaptive:
        raise InvalidOptionError(f"norm='seminorm' needs an adaptive adjoint method, got {backward!r}: set "
                                 f"{prefix}adjoint_method to an adaptive one (e.g. dopri5) or drop the seminorm")
