"""The checkpointed gradient: the exact gradient of the discrete solve (as ``direct`` gives), in
memory that grows like the square root of the number of steps.

The forward solve runs without a graph. It records every accepted step (times and flags:
floats) and keeps the state at some of them, the checkpoints. As the number of steps is not
known in advance, checkpoints start at every step and are thinned: when more than ``2k + 1`` are
kept, every other one goes and ``k``, the steps between two, doubles; so after ``N`` steps about
``sqrt(2N)`` states are kept, ``sqrt(N/2)`` steps apart. The backward pass replays one segment at a
time from its checkpoint, with a graph, and backpropagates through it: one more forward solve
(of the accepted steps only) and one backward, with at most one segment's graph alive.
``options["checkpoint_every"] = k`` fixes the segment length instead.

A multistep solver cannot restart from the state alone: its checkpoints also keep the history it
carries (past slopes), and the backward pass treats that history as an input of the segment, so
the gradient reaches it from the segments after and flows on into the steps that computed it.
"""

from __future__ import annotations

import torch

from neuralode.ode import stats as _stats
from neuralode.ode.loop import AcceptedStep, outputs_at, step_interpolant
from neuralode.ode.problem import Problem


class Checkpoints:
    """The accepted steps of a forward solve and the states kept at some of them."""

    def __init__(self, y0: torch.Tensor, every: int | None, multistep: bool = False):
        self.steps: list[AcceptedStep] = []
        self.states: dict[int, torch.Tensor] = {0: y0.detach()}  # step index -> state at its start
        self.histories: dict | None = {} if multistep else None  # step index (> 0) -> carried history
        self.fixed = every is not None
        self.every = every or 1

    def __call__(self, record: AcceptedStep, y1: torch.Tensor, f1) -> None:
        self.steps.append(record)
        n = len(self.steps)
        if f1 is None or n % self.every:
            return
        self.states[n] = y1
        if self.histories is not None:
            self.histories[n] = f1
        if not self.fixed and len(self.states) > 2 * self.every + 1:
            self.every *= 2
            self.states = {i: y for i, y in self.states.items() if i % self.every == 0}
            if self.histories is not None:
                self.histories = {i: c for i, c in self.histories.items() if i % self.every == 0}


def replay(problem: Problem, setup, steps: list[AcceptedStep], y: torch.Tensor, history=None,
           following: AcceptedStep | None = None):
    """Re-run accepted steps from ``y`` (and a multistep solver's ``history``, else it starts
    afresh) with autograd; the end state, the outputs inside, and the history carried into
    ``following`` (the next step) for a multistep solver."""
    solver, f = setup.solver, problem.field
    adaptive = solver.adaptive
    interp = setup.interp
    outputs = []
    f0 = history if history is not None else solver.init(f, steps[0].t, y, steps[0].perturb_start)
    for i, record in enumerate(steps):
        h = record.t1 - record.t
        step = solver.step(f, record.t, y, h, f0, perturb_end=record.perturb_end)
        if record.outputs:
            times = [s for _, s in record.outputs]
            values = outputs_at(lambda ss: step_interpolant(solver, adaptive, interp, f, record.t, h, y, step).at(ss),
                                times, record.t1, step.y1)
            outputs.extend((index, value) for (index, _), value in zip(record.outputs, values))
        if i + 1 < len(steps):
            f0 = solver.next_init(f, record.t1, step, steps[i + 1].perturb_start)
        y = step.y1
    history_end = None
    if following is not None and solver.multistep:
        history_end = solver.next_init(f, steps[-1].t1, step, following.perturb_start)
    return y, outputs, history_end


class _CheckpointedSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Problem, setup, t, event, y0: torch.Tensor, *params: torch.Tensor):
        stats = _stats.SolveStats()
        problem.y0 = y0
        checkpoints = Checkpoints(y0, setup.options.get("checkpoint_every"), setup.solver.multistep)
        with torch.no_grad():
            solution = setup.integrate(problem, stats, t, event, on_accept=checkpoints)
        stats.nfe = problem.nfe
        _stats.record(stats)
        problem.event_s = solution.event_t
        ctx.problem, ctx.setup, ctx.checkpoints = problem, setup, checkpoints
        ctx.save_for_backward(*params)
        return torch.stack(solution.ys)

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        params = ctx.saved_tensors
        problem, setup, checkpoints = ctx.problem, ctx.setup, ctx.checkpoints
        nfe_before = problem.nfe
        starts = sorted(checkpoints.states)
        ends = starts[1:] + [len(checkpoints.steps)]
        adj_y = None  # dL/d(state at the end of the segment), from the segments after it
        adj_history = None  # dL/d(the history's tensors there), for a multistep solver
        param_grads = [torch.zeros_like(p) for p in params]
        for start, end in reversed(list(zip(starts, ends))):
            if start == end:
                continue
            with torch.enable_grad():
                y_start = checkpoints.states[start].detach().requires_grad_(True)
                history, leaves = None, []
                if checkpoints.histories is not None and start > 0:
                    stored = checkpoints.histories[start]
                    leaves = [x.detach().requires_grad_(True) for x in stored.tensors]
                    history = stored.with_tensors(leaves)
                following = checkpoints.steps[end] if end < len(checkpoints.steps) else None
                y_end, outputs, history_end = replay(problem, setup, checkpoints.steps[start:end], y_start,
                                                     history, following)
                # One scalar whose gradient is the vector-Jacobian product of every output at once.
                total = (y_end * adj_y).sum() if adj_y is not None else y_end.new_zeros(())
                if adj_history is not None:
                    total = total + sum((x * a).sum() for x, a in zip(history_end.tensors, adj_history))
                if outputs:
                    index = torch.tensor([i for i, _ in outputs], device=grad_ys.device)
                    total = total + (torch.stack([y for _, y in outputs]) * grad_ys[index]).sum()
                found = torch.autograd.grad(total, (y_start, *leaves, *params), allow_unused=True)
            adj_y = found[0] if found[0] is not None else torch.zeros_like(y_start)
            if leaves:
                adj_history = [g if g is not None else torch.zeros_like(x)
                               for g, x in zip(found[1:1 + len(leaves)], leaves)]
                found = found[:1] + found[1 + len(leaves):]
            for total, g in zip(param_grads, found[1:]):
                if g is not None:
                    total.add_(g)
        grad_y0 = grad_ys[0] if adj_y is None else adj_y + grad_ys[0]
        _stats.record(_stats.SolveStats(nfe=problem.nfe - nfe_before), backward=True)
        return (None, None, None, None, grad_y0, *param_grads)


def solve_checkpointed(problem: Problem, setup, t, event, params):
    ys = _CheckpointedSolve.apply(problem, setup, t, event, problem.y0, *params)
    return ys, problem.event_s
