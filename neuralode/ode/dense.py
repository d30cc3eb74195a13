"""``odeint_dense``: solve once, then ask for the state at any time in between.

The solve records its accepted steps and the state at the start of each (the checkpointed
gradient's record, kept at every step); a query replays the step that holds it, and keeps the
interpolants of recently queried steps.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from typing import Callable

import torch

from neuralode.ode import stats as _stats
from neuralode.ode.setup import make_setup
from neuralode.ode.checkpoint import Checkpoints
from neuralode.ode.errors import InvalidTimeError
from neuralode.ode.loop import step_interpolant
from neuralode.ode.problem import make_problem

_CACHED_STEPS = 64


class DenseSolution:
    """The solution of one solve, at any time of its span (no gradient)."""

    def __init__(self, problem, setup, record: Checkpoints):
        self.problem, self.setup, self.steps, self.states = problem, setup, record.steps, record.states
        self.histories = record.histories
        self.starts = [s.t for s in self.steps]
        self.span = (problem.times[0], problem.times[-1])
        self._interpolants: OrderedDict[int, Callable] = OrderedDict()

    def _interpolant(self, i: int) -> Callable:
        if i not in self._interpolants:
            solver, f, record = self.setup.solver, self.problem.field, self.steps[i]
            y = self.states[i]
            # a multistep solver restarts from the history it carried into the step
            start = self.histories[i] if self.histories and i in self.histories else \
                solver.init(f, record.t, y, record.perturb_start)
            step = solver.step(f, record.t, y, record.t1 - record.t, start, perturb_end=record.perturb_end)
            self._interpolants[i] = step_interpolant(solver, solver.adaptive, self.setup.interp,
                                                     f, record.t, record.t1 - record.t, y, step)
            if len(self._interpolants) > _CACHED_STEPS:
                self._interpolants.popitem(last=False)
        return self._interpolants[i]

    @torch.no_grad()
    def __call__(self, t_eval: torch.Tensor):
        """The state at ``t_eval`` (a scalar or 1-D tensor of times inside the solve's span)."""
        times = torch.as_tensor(t_eval).detach().to("cpu", torch.float64)
        scalar = times.dim() == 0
        out = []
        for t in times.reshape(-1).tolist():
            s = self.problem.direction * t
            if not self.span[0] <= s <= self.span[1]:
                raise InvalidTimeError(f"odeint_dense: t={t} is outside the solved span "
                                       f"[{self.problem.user_time(self.span[0])}, {self.problem.user_time(self.span[1])}]")
            i = max(0, min(bisect.bisect_right(self.starts, s) - 1, len(self.steps) - 1))
            out.append(self.problem.y0 if not self.steps else self._interpolant(i)(s))
        ys = torch.stack(out)
        ys = ys[0] if scalar else ys
        if self.problem.shapes is None:
            return ys
        return self.problem.unpack(ys.unsqueeze(0))[0] if scalar else self.problem.unpack(ys)


def odeint_dense(func: Callable, y0, t0, t1, *, rtol=1e-7, atol=1e-9, method: str | None = None,
                 options: dict | None = None) -> DenseSolution:
    """Solve from ``t0`` to ``t1`` and return a function of time: the state anywhere in between,
    from the solver's own interpolant (torchdiffeq's ``odeint_dense``, for every method)."""
    t = torch.stack([torch.as_tensor(t0, dtype=torch.float64).reshape(()),
                     torch.as_tensor(t1, dtype=torch.float64).reshape(())])
    problem = make_problem(func, y0, t)
    setup = make_setup(method, rtol, atol, options, problem.shapes)
    record = Checkpoints(problem.y0, every=1, multistep=setup.solver.multistep)
    stats = _stats.SolveStats()
    with torch.no_grad():
        setup.integrate(problem, stats, t, on_accept=record)
    stats.nfe = problem.nfe
    _stats.record(stats)
    return DenseSolution(problem, setup, record)
