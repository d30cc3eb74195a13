"""The batched loop, for the device: an adaptive explicit Runge-Kutta solve whose times, step sizes and
accept/reject decisions stay tensors, so the host reads the device only every ``sync_every``
attempted steps (``loop.py`` reads the error norm at every attempt, and on CUDA each read makes
the host wait for the device).

It steps the state in rows, each with its own time, step size, error estimate and acceptance:
  - ``per_sample=True``: one row per entry of the state's first dimension (the batch). A sample
    takes the steps it needs, so one hard sample no longer shrinks every other sample's steps,
    and its result does not depend on its batch-mates. ``func(t, y)`` receives ``t`` of shape
    ``(batch,)``, each sample's own time.
  - otherwise one row, the whole state: the same steps as ``loop.py`` takes.
Rows that have reached the last output time stop advancing, but ``func`` still sees them
(the batch is evaluated as a whole); ``SolveStats.nfe_per_sample`` counts each row's evaluations
while it was still moving.

``compile=True`` (or a dict of ``torch.compile`` arguments) compiles the attempted step (stages,
error estimate, controller and dense output: :class:`_Attempt`) with ``torch.compile``, with
``fullgraph=True`` unless ``func`` breaks the graph. It pays where launching kernels costs more
than running them (small states on a GPU); the first solve compiles (tens of seconds), and later
solves with the same ``func``, shapes and settings reuse it.

What it leaves to ``loop.py``: events, step callbacks, ``step_t``/``jump_t``, checkpointed
gradients, fixed-step, multistep and implicit methods.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from neuralode.ode.controllers import starting_step, step_factor
from neuralode.ode.errors import InvalidOptionError, MaxStepsExceededError, stalled_solve_error, time_limit_error
from neuralode.ode.problem import DEFAULT_MAX_NUM_STEPS, Problem, check_start
from neuralode.ode.solvers.runge_kutta import ExplicitRungeKutta, _coefficients, hermite_basis
from neuralode.ode.stats import SolveStats

#: Options that route an adaptive explicit Runge-Kutta solve here.
BATCHED_LOOP_OPTIONS = ("per_sample", "sync_every", "compile")
#: A step ends at the latest at the OUTPUTS_PER_STEP-th output time after its start, so that the
#: outputs inside a step are a fixed number of dense-output evaluations, with no host read to
#: count them. Solves with more outputs than that per natural step take a few more steps.
OUTPUTS_PER_STEP = 8
_EPS = 2.0 ** -52


def default_sync_every(device: torch.device) -> int:
    """Host reads every attempted step on CPU (a read costs nothing there), every 8 on an
    accelerator, where each read stalls the host until the device catches up and up to 7
    steps are computed past the end."""
    return 1 if device.type == "cpu" else 8


def uses_batched_loop(options: dict) -> bool:
    """Whether ``options`` send a solve here."""
    return bool(options.get("per_sample")) or options.get("sync_every") is not None or bool(options.get("compile"))


def check_batched_options(solver, options: dict, prefix: str = "") -> None:
    """Refuse the batched loop's options where it cannot run, naming what to use instead."""
    per_sample, sync_every = options.get("per_sample", False), options.get("sync_every")
    if not isinstance(per_sample, bool):
        raise InvalidOptionError(f"{prefix}option 'per_sample' must be True or False, got {per_sample!r}")
    if sync_every is not None and not (isinstance(sync_every, int) and not isinstance(sync_every, bool)
                                       and sync_every > 0):
        raise InvalidOptionError(f"{prefix}option 'sync_every' must be a positive integer, got {sync_every!r}")
    compile_option = options.get("compile", False)
    if not isinstance(compile_option, (bool, dict)):
        raise InvalidOptionError(f"{prefix}option 'compile' must be True, False or a dict of torch.compile "
                                 f"arguments (e.g. {{'mode': 'max-autotune'}}), got {compile_option!r}")
    if not uses_batched_loop(options):
        return
    if not isinstance(solver, ExplicitRungeKutta) or not solver.adaptive or solver.tableau.dense_stages:
        raise InvalidOptionError(
            f"{prefix}options 'per_sample'/'sync_every'/'compile' run adaptive explicit Runge-Kutta methods without "
            f"extra dense-output stages (dopri5, tsit5, bosh3, fehlberg2, adaptive_heun), not {solver.name!r}")
    for key in ("step_t", "jump_t"):
        if options.get(key):
            raise InvalidOptionError(f"{prefix}option {key!r} is not supported with 'per_sample'/'sync_every'")
    if per_sample and callable(options.get("norm")):
        raise InvalidOptionError(f"{prefix}option 'per_sample' measures each sample's error by RMS; a custom "
                                 "'norm' cannot be applied per sample: drop one of them")


def integrate_batched(problem: Problem, solver, rtol, atol, norm, options: dict,
                        stats: SolveStats) -> list[torch.Tensor]:
    """Solve ``problem`` (see the module's docstring); the state at each output time."""
    tab = solver.tableau
    per_sample = bool(options.get("per_sample", False))
    y0 = problem.y0
    if per_sample and (problem.shapes is not None or y0.dim() == 0):
        raise InvalidOptionError("option 'per_sample' needs y0 to be one tensor whose first dimension is the "
                                 f"batch, got {'a tuple state' if problem.shapes is not None else 'a 0-dim tensor'}")
    n_out = len(problem.times)
    if n_out == 1:
        return [y0]
    n_rows = y0.shape[0] if per_sample else 1
    device = y0.device
    times = torch.tensor(problem.times, dtype=torch.float64, device=device)
    t_end, span = times[-1], problem.times[-1] - problem.times[0]
    controller = _RowController(rtol, atol, tab.error_order, options)
    attempt = _Attempt(problem.user_field, problem.direction, tab, controller, norm, times, n_rows, per_sample, y0)

    s = times[0].expand(n_rows).clone()
    f0 = attempt.field(s, y0)
    check_start(y0, f0, problem.user_time(problem.times[0]))
    with torch.no_grad():
        h = controller.initial_step(attempt, s, y0, f0)
    start_evals = 1 + (controller.first_step is None)  # f0, and the initial step's trial evaluation
    problem.nfe += start_evals
    nfe_rows = torch.full((n_rows,), start_evals, device=device)
    evals_per_attempt = tab.num_stages - 1 + (0 if tab.fsal else 1)
    step = _compiled(attempt, options["compile"]) if options.get("compile") else attempt

    next_out = torch.ones(n_rows, dtype=torch.long, device=device)  # each row's next output to fill
    # Row j * n_rows + r holds output j of row r; writes that miss go to the extra last row.
    table = y0.new_zeros(n_out * n_rows + 1, attempt.width)
    graph_index, graph_values = [], []  # with autograd: gathered once at the end
    n_accepted = torch.zeros(n_rows, dtype=torch.long, device=device)
    n_attempts = torch.zeros(n_rows, dtype=torch.long, device=device)
    underflow = torch.zeros(n_rows, dtype=torch.bool, device=device)
    nonfinite = torch.zeros(n_rows, dtype=torch.bool, device=device)
    history = (torch.ones(n_rows, dtype=torch.float64, device=device),) * 2  # the controller's last two ratios
    sync_every = options.get("sync_every") or default_sync_every(device)
    max_num_steps = options.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
    deadline = time.monotonic() + options["max_seconds"] if options.get("max_seconds") else None
    y, iterations = y0, 0

    while True:
        for _ in range(sync_every):
            (s_next, h_next, y, f0, next_out, history, active, accept, finite, index, values) = step(
                s, h, y, f0, next_out, history)
            problem.nfe += evals_per_attempt
            with torch.no_grad():
                stuck = active & ~accept & (h_next < 4 * _EPS * torch.clamp(s.abs(), min=span))
                underflow |= stuck
                nonfinite |= stuck & ~finite
                n_attempts += active
                n_accepted += accept
                nfe_rows += active * evals_per_attempt
            if values.requires_grad:
                graph_index.append(index)
                graph_values.append(values)
            else:
                table.index_add_(0, index, values)
            s, h = s_next, h_next
            iterations += 1
        done, stalled = torch.stack([(s >= t_end).all(), underflow.any()]).tolist()  # the one read
        if stalled:
            raise _stalled_error(problem, s, h, underflow, nonfinite, n_accepted, solver.name, per_sample)
        if done:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise time_limit_error(options["max_seconds"], f"t={problem.user_time(float(s.min())):.6g} (the slowest row)",
                                   int(n_accepted.max()), solver.name)
        if iterations >= max_num_steps:
            raise MaxStepsExceededError(
                f"reached max_num_steps={max_num_steps} attempted steps with {int((s < t_end).sum())} of {n_rows} "
                f"{'samples' if per_sample else 'rows'} short of t={problem.user_time(problem.times[-1]):.6g} "
                f"(method {solver.name}); raise options['max_num_steps'], loosen the tolerances, or check whether "
                "the dynamics are stiff")

    if graph_values:  # every (output, row) was written by exactly one accepted step
        table = table.index_add(0, torch.cat(graph_index), torch.cat(graph_values))
    ys = table[: n_out * n_rows].view(n_out, *y0.shape)
    accepted, rejected, h_next = torch.stack([n_accepted.sum().double(), (n_attempts - n_accepted).sum().double(),
                                              h[0]]).tolist()
    stats.n_accepted += int(accepted)  # += : the adjoint's backward segments share one stats
    stats.n_rejected += int(rejected)
    stats.next_step = None if per_sample else h_next  # a warm start for a follow-on solve
    stats.nfe_per_sample = nfe_rows if per_sample else None
    return [y0, *ys[1:].unbind(0)]


class _Attempt:
    """One attempted step of every row: stages, error estimate, the controller's decision, and
    the dense outputs that fall inside the step. A function of tensors alone (its settings are
    fixed per solve), so that ``torch.compile`` can trace it whole."""

    def __init__(self, user_field, direction: int, tab, controller, norm, times, n_rows: int, per_sample: bool,
                 y0: torch.Tensor):
        self.user_field, self.direction, self.tab, self.controller, self.norm = user_field, direction, tab, controller, norm
        self.times, self.n_out, self.n_rows, self.per_sample = times, len(times), n_rows, per_sample
        self.dtype = y0.dtype
        self.row_shape = (n_rows,) + (1,) * (y0.dim() - 1) if per_sample else ()
        self.width = y0[0].numel() if per_sample else y0.numel()
        self.a_rows, self.b, self.b_err, _ = _coefficients(tab, y0.dtype, y0.device)
        # A step ends at the n_ahead-th output ahead at the latest (so never past the last time).
        self.n_ahead = min(OUTPUTS_PER_STEP, self.n_out - 1)
        self.ahead_offsets = torch.arange(self.n_ahead, device=y0.device)[:, None]
        self.row_index = torch.arange(n_rows, device=y0.device)

    def per_row(self, v: torch.Tensor) -> torch.Tensor:
        """A (rows,) tensor as a factor that broadcasts against the state."""
        return v.to(self.dtype).view(self.row_shape) if self.per_sample else v.to(self.dtype).reshape(())

    def row_norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_sample:
            return x.reshape(self.n_rows, -1).pow(2).mean(1).sqrt().double()
        return self.norm(x).double().reshape(1)

    def field(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``func`` at solver times ``s`` (rows,), in the solver's direction (uncounted: the loop counts)."""
        t = (self.direction * s).to(self.dtype)
        dy = self.user_field(t if self.per_sample else t[0], y)
        return dy if self.direction > 0 else -dy

    def __call__(self, s, h, y, f0, next_out, history):
        tab, times, n_out, n_rows = self.tab, self.times, self.n_out, self.n_rows
        with torch.no_grad():
            active = s < times[-1]
            cap = times[(next_out + self.n_ahead - 1).clamp(max=n_out - 1)]
            s1 = torch.where(active, torch.minimum(s + h, cap), s)
            h_step = s1 - s
        hb = self.per_row(h_step)
        ks = [f0]
        for i in range(1, tab.num_stages):
            y_i = y + hb * (torch.stack(ks).reshape(i, -1).t() @ self.a_rows[i]).view(y.shape)
            ks.append(self.field(s + tab.c[i] * h_step, y_i))
        stages = torch.stack(ks)
        flat = stages.reshape(tab.num_stages, -1).t()
        y1 = y + hb * (flat @ self.b).view(y.shape)
        f1 = stages[-1] if tab.fsal else self.field(s1, y1)

        with torch.no_grad():
            err = hb * (flat @ self.b_err).view(y.shape)
            accept, h_next, finite, history = self.controller.adapt(self, err, y, y1, h_step, active, history)
            h_next = torch.where(active, h_next, h)
            # The outputs inside this step, if it is accepted.
            ahead = next_out + self.ahead_offsets  # (n_ahead, rows)
            t_ahead = times[ahead.clamp(max=n_out - 1)]
            hit = accept & (ahead < n_out) & (t_ahead <= s1)
            theta = torch.where(h_step > 0, (t_ahead - s) / torch.where(h_step > 0, h_step, 1.0), 1.0)
            index = torch.where(hit, ahead * n_rows + self.row_index, n_out * n_rows).reshape(-1)
            next_out = next_out + hit.sum(0)
        values = _dense(tab, theta, y, y1, f0, f1, stages, hb, self.per_sample).reshape(-1, self.width)
        keep = accept.view(self.row_shape) if self.per_sample else accept[0]
        s = torch.where(accept, s1, s)
        y = torch.where(keep, y1, y)
        f0 = torch.where(keep, f1, f0)
        return s, h_next, y, f0, next_out, history, active, accept, finite, index, values


def _compiled(attempt: _Attempt, settings: bool | dict):
    """``attempt`` through ``torch.compile`` (``settings``: True, or its keyword arguments);
    ``fullgraph=True`` unless given, falling back to a graph with breaks (and saying so) when
    ``func`` cannot be traced whole."""
    kwargs = dict(settings) if isinstance(settings, dict) else {}
    if "fullgraph" in kwargs:
        return torch.compile(attempt.__call__, **kwargs)
    whole = torch.compile(attempt.__call__, fullgraph=True, **kwargs)

    def step(*args):
        nonlocal whole
        try:
            return whole(*args)
        except (torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError) as error:  # a graph break
            warnings.warn(f"option 'compile': func cannot be traced as one graph ({str(error).splitlines()[0]}); "
                          "compiling it with graph breaks", stacklevel=2)
            whole = torch.compile(attempt.__call__, fullgraph=False, **kwargs)
            return whole(*args)
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            # Something the graph depends on changes at every call (a Python counter on func, a
            # new shape each solve): each call would compile again. Run this solve eagerly.
            warnings.warn("option 'compile': the compiled step recompiled torch._dynamo.config.recompile_limit="
                          f"{torch._dynamo.config.recompile_limit} times (func changes a Python value it reads at "
                          "every call, or shapes change each solve: TORCH_LOGS=recompiles says which); this solve "
                          "runs eagerly", stacklevel=2)
            whole = attempt.__call__
            return whole(*args)

    return step


class _RowController:
    """``controllers.PIDController``'s rule, applied to every row at once on the device."""

    def __init__(self, rtol, atol, error_order: int, options: dict):
        self.rtol, self.atol, self.k = rtol, atol, error_order
        self.first_step = options.get("first_step")
        self.min_step, self.max_step = options.get("min_step") or 0.0, options.get("max_step") or math.inf
        self.safety = options.get("safety", 0.9)
        self.min_factor, self.max_factor = options.get("min_factor", 0.2), options.get("max_factor", 10.0)
        i, p, d = (options.get(key, default) for key, default in (("icoeff", 1.0), ("pcoeff", 0.0), ("dcoeff", 0.0)))
        self.b1, self.b2, self.b3 = i + p + d, -(p + 2 * d), d

    def scale(self, y: torch.Tensor, y1: torch.Tensor | None = None) -> torch.Tensor:
        size = y.abs() if y1 is None else torch.maximum(y.abs(), y1.abs())
        return size.mul(self.rtol).add(self.atol)

    def initial_step(self, attempt: _Attempt, s, y0, f0) -> torch.Tensor:
        """Hairer, Norsett and Wanner's starting step for each row (``controllers.starting_step``)."""
        if self.first_step is not None:
            h = torch.full_like(s, float(self.first_step))
        else:
            h = starting_step(lambda h0: attempt.field(s + h0, y0 + attempt.per_row(h0) * f0), y0, f0, self.k,
                              self.rtol, self.atol, attempt.row_norm)
        return h.clamp(self.min_step, self.max_step)

    def adapt(self, attempt: _Attempt, err, y, y1, h, active, history):
        """Per row: accepted?, the next step size, whether the error was finite, and the
        history of error ratios (r_{n-1}, r_{n-2}) after this attempt."""
        ratio = attempt.row_norm(err / self.scale(y, y1))
        finite = torch.isfinite(ratio)
        accept = active & finite & ((ratio <= 1.0) | (h <= self.min_step))
        r1, r2 = history
        factor = step_factor(self, ratio, accept, r1, r2, self.k)
        history = (torch.where(accept, ratio.clamp(min=1e-10), r1), torch.where(accept, r1, r2))
        return accept, (h * factor).clamp(self.min_step, self.max_step), finite, history


def _dense(tab, theta, y0, y1, f0, f1, stages, hb, per_sample) -> torch.Tensor:
    """The state at ``theta`` (K, rows) inside each row's step, shape (K, *state shape): the
    method's own dense output, else a cubic Hermite polynomial through both ends and slopes."""
    if tab.dense is not None:
        weights = torch.stack([w if torch.is_tensor(w) else torch.full_like(theta, w) for w in tab.dense(theta)])
        parts, base = stages, y0
    else:
        h01, h10, h11 = hermite_basis(theta)
        weights = torch.stack([h10, h11])
        parts = torch.stack([f0, f1])
        h01 = h01.to(y0.dtype)
        h01 = h01.view(*h01.shape, *(1,) * (y0.dim() - 1)) if per_sample else h01[:, 0].view(-1, *(1,) * y0.dim())
        base = y0 + h01 * (y1 - y0)
    weights = weights.to(y0.dtype)  # (P, K, rows)
    if per_sample:  # for each row r: (K, P) @ (P, N)
        flat = parts.reshape(parts.shape[0], y0.shape[0], -1).transpose(0, 1)  # (rows, P, N)
        mixed = torch.bmm(weights.permute(2, 1, 0), flat).transpose(0, 1)  # (K, rows, N)
    else:
        mixed = weights[:, :, 0].t() @ parts.reshape(parts.shape[0], -1)
    return base + hb * mixed.view(theta.shape[0], *y0.shape)


def _stalled_error(problem, s, h, underflow, nonfinite, n_accepted, method, per_sample) -> Exception:
    row = int(underflow.nonzero()[0])
    where = f"t={problem.user_time(float(s[row])):.6g}" + (f" in sample {row}" if per_sample else "")
    return stalled_solve_error(where, int(n_accepted[row]), float(h[row]), method, bool(nonfinite[row]))
