"""Benchmark of the ODE core against torchdiffeq and torchode (issue 2, "Benchmark").

Solves the same problems with the three libraries, side by side in one run:

* a tiny MLP field (2 -> 64 -> 2, tanh), batch 512, dopri5 at rtol = atol = 1e-5 and rk4 with
  a fixed step of 0.05 over [0, 1];
* the MNIST ODE function of the paper (64 channels on 6x6 maps, batch 128), dopri5 at 1e-3;
* the latent ODE's dynamics on spirals (4 -> 20 -> 20 -> 4, ELU, batch 100), dopri5 at 1e-3 with
  100 output times over [0, 3], the loss on all of them, as the spiral training step has;
* FFJORD's 2-D field (3 -> 64 -> 64 -> 64 -> 2, tanh, time as an input) with Hutchinson's trace
  (one vector-Jacobian product a call), state (z, log p) of 100 samples, dopri5 at 1e-5 over
  [0, 0.5], as FFJORD's toy training step has.

For each problem and library it measures the forward time (no grad), the forward + backward
time with direct backprop and with the adjoint (plain and seminorm), the forward and backward
NFE, the max error of the final state against a float64 reference, and compares times with
torchdiffeq's. Every library gets the same vector field wrapped in the same call counter,
so NFE are counted identically. The peers are benchmark-only: a missing one is reported as
"not installed" and skipped.

    python scripts/bench_ode.py [--quick] [--threads 1] [--device cpu|cuda] [--compile]

``--compile`` adds a row "neuralode compiled": the adaptive solves with ``options={"compile":
True}`` (the attempted step through ``torch.compile``; its compilation happens in the counted,
untimed first run).

Writes the table to outputs/bench/ode.md and prints it.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from neuralode.models.cnf import trace_hutchinson
from neuralode.models.latent_ode import LatentDynamics
from neuralode.ode import odeint, odeint_adjoint

try:
    import torchdiffeq
except ImportError:
    torchdiffeq = None
try:
    import torchode
except ImportError:
    torchode = None

T_END = 1.0
MODES = ("forward", "direct", "adjoint", "seminorm")
MODE_NAMES = {
    "forward": "forward (no grad)",
    "direct": "fwd+bwd, direct backprop",
    "adjoint": "fwd+bwd, adjoint",
    "seminorm": "fwd+bwd, adjoint seminorm",
}
# Targets of issue 2.
TINY_OVERHEAD_TARGET = 1.6  # time per solve <= 1.6 x NFE x bare call
# Issue 14: the tiny dopri5 solve at least 2x faster than torchdiffeq and 1.5x than torchode;
# a training step of the paper's workloads in at most half torchdiffeq's time.
TINY_VS_TORCHDIFFEQ_TARGET = 0.5
TINY_VS_TORCHODE_TARGET = 1 / 1.5
TRAINING_STEP_TARGET = 0.5
CONV_TIME_TARGET = 1.05  # <= 1.05 x torchdiffeq's time
SEMINORM_NFE_TARGET = 0.6  # backward NFE <= 0.6 x torchdiffeq's default adjoint


# --------------------------------------------------------------------------- vector fields
class TinyField(nn.Module):
    """dy/dt = W2 tanh(W1 y + b1) + b2, autonomous."""

    def __init__(self, dim: int = 2, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class ConcatConv2d(nn.Module):
    """3x3 convolution that sees time as one extra input channel (the paper's ODE-Net)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # t is 0-dim for neuralode and torchdiffeq, one time per sample for torchode.
        tt = t.to(x.dtype).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return self.conv(torch.cat([tt, x], dim=1))


class ConvField(nn.Module):
    """The MNIST ODE function: GN-ReLU-ConcatConv-GN-ReLU-ConcatConv-GN."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(32, channels), channels)
        self.conv1 = ConcatConv2d(channels)
        self.norm2 = nn.GroupNorm(min(32, channels), channels)
        self.conv2 = ConcatConv2d(channels)
        self.norm3 = nn.GroupNorm(min(32, channels), channels)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


def latent_field() -> nn.Module:
    """The latent ODE's dynamics on spirals, as configs/model/latent_ode.yaml builds them."""
    return LatentDynamics(latent_dim=4, hidden=20, activation="elu", layers=2)


class FFJORDField(nn.Module):
    """FFJORD's 2-D density field on the state (z, log p), shape (batch, 3): dz/dt = g(t, z) and
    d log p/dt = -e^T (dg/dz) e, Hutchinson's estimate with Rademacher noise fixed for the solve.
    Not the package's CNFDynamics: its time layers take one time per solve, and torchode steps
    each sample at its own time."""

    def __init__(self, batch: int = 100, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                 nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 2))
        generator = torch.Generator().manual_seed(1)
        self.register_buffer("noise", torch.randint(0, 2, (batch, 2), generator=generator) * 2.0 - 1.0)

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        differentiable = torch.is_grad_enabled()  # a training step: the trace must be differentiable too
        with torch.enable_grad():
            z = state[:, :2]
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            # t is 0-dim for neuralode and torchdiffeq, one time per sample for torchode.
            tt = t.to(z.dtype).reshape(-1, 1).expand(z.shape[0], 1)
            dz = self.net(torch.cat([z, tt], 1))
            trace = trace_hutchinson(dz, z, self.noise.to(z.dtype), create_graph=differentiable)
        out = torch.cat([dz, -trace[:, None]], 1)
        return out if differentiable else out.detach()


class Counted(nn.Module):
    """Counts the calls of a field. Every library solves through one of these, so NFE are
    counted the same way for all of them (the adjoint backward included)."""

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.func(t, y)


class Flat(nn.Module):
    """torchode wants states of shape (batch, features): reshape around the field."""

    def __init__(self, func: nn.Module, shape: torch.Size):
        super().__init__()
        self.func = func
        self.shape = shape

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.func(t, y.view(self.shape)).reshape(y.shape)


# --------------------------------------------------------------------------- problems
@dataclass
class Problem:
    name: str
    make_field: Callable[[], nn.Module]
    state_shape: tuple[int, ...]
    method: str  # "dopri5" or "rk4"
    rtol: float = 1e-7  # unused by fixed-step methods
    atol: float = 1e-9
    step_size: float | None = None  # a fixed-step method's step
    # The float64 reference: dopri8 at this tolerance on the first `reference_samples`
    # samples (samples are independent, so this is their exact solution).
    reference_tol: float = 1e-10
    reference_samples: int | None = None
    t_end: float = T_END
    n_times: int = 2  # output times, evenly over [0, t_end]; the loss is on all of them

    @property
    def adaptive(self) -> bool:
        return self.step_size is None

    def describe(self) -> str:
        solver = f"{self.method} rtol=atol={self.rtol:g}" if self.adaptive else f"{self.method} step {self.step_size:g}"
        outputs = f", {self.n_times} output times" if self.n_times > 2 else ""
        return f"{self.name}, state {tuple(self.state_shape)}, {solver}, t in [0, {self.t_end:g}]{outputs}"

    def describe_reference(self) -> str:
        samples = f"the first {self.reference_samples} samples" if self.reference_samples else "all samples"
        return f"float64 dopri8 at rtol=atol={self.reference_tol:g}, {samples}"


PROBLEMS = [
    Problem("tiny MLP 2-64-2", TinyField, (512, 2), "dopri5", rtol=1e-5, atol=1e-5),
    Problem("tiny MLP 2-64-2", TinyField, (512, 2), "rk4", step_size=0.05),
    # ReLU kinks make tight solves of the conv field expensive (dopri8 at 1e-9 takes ~7500 NFE
    # for 8 samples); 1e-8 on 8 samples is within ~3e-6 of it, far below the errors at 1e-3.
    Problem("MNIST ODE func (conv)", ConvField, (128, 64, 6, 6), "dopri5", rtol=1e-3, atol=1e-3,
            reference_tol=1e-8, reference_samples=8),
    Problem("latent ODE dynamics 4-20-20-4", latent_field, (100, 4), "dopri5", rtol=1e-3, atol=1e-3, t_end=3.0,
            n_times=100),
    Problem("FFJORD 2-D field, Hutchinson trace", FFJORDField, (100, 3), "dopri5", rtol=1e-5, atol=1e-5,
            t_end=0.5),
]
#: The paper workloads of issue 14's training-step target, with the gradient each experiment
#: trains with (configs/experiment/*.yaml): the ODE-Net the adjoint, the small families backprop.
TRAINING_STEPS = {ConvField: "adjoint", latent_field: "direct", FFJORDField: "direct"}
PROBLEM_SETS = {"all": None, "tiny": TinyField, "conv": ConvField, "latent": latent_field, "ffjord": FFJORDField}


# --------------------------------------------------------------------------- the libraries
def times_for(y0: torch.Tensor, p: Problem) -> torch.Tensor:
    return torch.linspace(0.0, p.t_end, p.n_times, dtype=y0.dtype, device=y0.device)


def solve_neuralode(f: Counted, y0: torch.Tensor, p: Problem, mode: str) -> torch.Tensor | None:
    kwargs = dict(method=p.method, rtol=p.rtol, atol=p.atol,
                  options=None if p.adaptive else {"step_size": p.step_size})
    if mode in ("forward", "direct"):
        return odeint(f, y0, times_for(y0, p), **kwargs)
    if mode == "seminorm" and not p.adaptive:
        return None  # a seminorm needs step size control
    adjoint_options = {"norm": "seminorm"} if mode == "seminorm" else None
    return odeint_adjoint(f, y0, times_for(y0, p), adjoint_options=adjoint_options, **kwargs)


def solve_neuralode_compiled(f: Counted, y0: torch.Tensor, p: Problem, mode: str) -> torch.Tensor | None:
    if not p.adaptive:
        return None  # the compiled step is the adaptive one of the batched loop
    options = {"compile": True}
    if mode in ("forward", "direct"):
        return odeint(f, y0, times_for(y0, p), method=p.method, rtol=p.rtol, atol=p.atol, options=options)
    if mode == "seminorm":
        return None
    # Only the forward solve compiles: the adjoint's field calls torch.autograd.grad.
    return odeint_adjoint(f, y0, times_for(y0, p), method=p.method, rtol=p.rtol, atol=p.atol, options=options)


def solve_torchdiffeq(f: Counted, y0: torch.Tensor, p: Problem, mode: str) -> torch.Tensor | None:
    kwargs = dict(method=p.method, rtol=p.rtol, atol=p.atol,
                  options=None if p.adaptive else {"step_size": p.step_size})
    if mode in ("forward", "direct"):
        return torchdiffeq.odeint(f, y0, times_for(y0, p), **kwargs)
    if mode == "seminorm" and not p.adaptive:
        return None
    adjoint_options = dict(norm="seminorm") if mode == "seminorm" else None
    return torchdiffeq.odeint_adjoint(f, y0, times_for(y0, p), adjoint_options=adjoint_options, **kwargs)


def _torchode_rk4():
    """torchode 1.0.1 ships no rk4: build the classic one from its generic explicit RK."""
    from torchode.interpolation import ThirdOrderPolynomialInterpolation
    from torchode.single_step_methods.runge_kutta import ButcherTableau, ExplicitRungeKutta

    class RK4(ExplicitRungeKutta):
        # b_low_order only feeds an error estimate, which the fixed-step controller ignores.
        TABLEAU = ButcherTableau.from_lists(c=[0.0, 0.5, 0.5, 1.0], a=[[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]],
                                            b=[1 / 6, 1 / 3, 1 / 3, 1 / 6], b_low_order=[0.0, 0.0, 0.0, 1.0])

        def __init__(self, term=None):
            super().__init__(term, RK4.TABLEAU)

        def convergence_order(self):
            return 4

        def build_interpolation(self, data):
            return ThirdOrderPolynomialInterpolation.from_k(data.t0, data.dt, data.y0, data.y1, data.k)

    return RK4


def solve_torchode(f: Counted, y0: torch.Tensor, p: Problem, mode: str) -> torch.Tensor | None:
    """torchode's defaults: per-sample step sizes for forward/direct, its PID controller.
    The adjoint is its JointBacksolveAdjoint (one augmented state for the whole batch, like
    torchdiffeq's); it has no seminorm."""
    if mode == "seminorm":
        return None
    batch = y0.shape[0]
    term = torchode.ODETerm(Flat(f, y0.shape))
    if p.adaptive:
        step = torchode.Dopri5(term=term)
        controller = torchode.PIDController(atol=p.atol, rtol=p.rtol, pcoeff=0.2, icoeff=0.5, dcoeff=0.0, term=term)
        dt0 = None
    else:
        step = _torchode_rk4()(term=term)
        controller = torchode.FixedStepController()
        dt0 = torch.full((batch,), p.step_size, dtype=y0.dtype, device=y0.device)
    t_eval = times_for(y0, p).expand(batch, -1)
    problem = torchode.InitialValueProblem(y0.reshape(batch, -1), t_start=t_eval[:, 0], t_end=t_eval[:, -1],
                                           t_eval=t_eval)
    if mode in ("forward", "direct"):
        solution = torchode.AutoDiffAdjoint(step, controller).solve(problem, term=term, dt0=dt0)
    else:
        # The joint adjoint solves the batch as one instance, so one initial step, not one per sample.
        dt0 = None if dt0 is None else dt0[:1]
        solution = torchode.JointBacksolveAdjoint(term, step, controller).solve(problem, dt0=dt0)
    return solution.ys.transpose(0, 1).reshape(p.n_times, *y0.shape)


LIBRARIES: dict[str, Callable | None] = {
    "neuralode": solve_neuralode,
    "torchdiffeq": solve_torchdiffeq if torchdiffeq is not None else None,
    "torchode": solve_torchode if torchode is not None else None,
}
VERSIONS = {
    "torchdiffeq": getattr(torchdiffeq, "__version__", "?") if torchdiffeq else "not installed",
    "torchode": getattr(torchode, "__version__", "?") if torchode else "not installed",
}


# --------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int,
                        min_seconds: float, max_seconds: float, max_rounds: int = 200) -> tuple[dict[str, float], int]:
    """Median wall time in seconds of each of ``fns``, and the number of runs.

    They run in turn, round after round, so that the load of a shared machine falls on all of
    them alike: ``repeats`` rounds, fewer (at least one) once ``max_seconds`` have passed, more
    (up to ``max_rounds``) until ``min_seconds`` have passed. Fast solves get many runs, slow
    ones (the conv adjoint: seconds each) few."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    begin = time.perf_counter()
    rounds = 0
    while True:
        elapsed = time.perf_counter() - begin
        wanted = rounds < repeats and elapsed < max_seconds
        if rounds > 0 and not wanted and (elapsed >= min_seconds or rounds >= max_rounds):
            break
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - start)
        rounds += 1
    return {name: statistics.median(times) for name, times in samples.items()}, rounds


@dataclass
class Row:
    library: str
    mode: str
    seconds: float | None = None
    runs: int = 0
    nfe_forward: int | None = None
    nfe_backward: int | None = None
    error: float | None = None
    grad_diff: float | None = None
    note: str = ""


@dataclass
class Result:
    problem: Problem
    bare_call: float  # seconds of one func call, no grad
    rows: list[Row] = field(default_factory=list)

    def get(self, library: str, mode: str) -> Row | None:
        return next((r for r in self.rows if r.library == library and r.mode == mode and r.seconds), None)


def reference_solution(field_: nn.Module, y0: torch.Tensor, p: Problem) -> torch.Tensor:
    """The final state in float64, solved tightly with dopri8."""
    f64 = copy.deepcopy(field_).double()
    y0 = y0.double()
    with torch.no_grad():
        return odeint(f64, y0, times_for(y0, p), rtol=p.reference_tol, atol=p.reference_tol, method="dopri8")[-1]


def bench_problem(p: Problem, device: torch.device, repeats: int, warmup: int, min_seconds: float,
                  max_seconds: float) -> Result:
    torch.manual_seed(0)
    field_ = p.make_field().to(device)
    y0 = torch.randn(p.state_shape, device=device)
    cotangent = torch.randn((p.n_times, *p.state_shape), device=device)  # loss = <y(t_1..t_n), cotangent>
    n_ref = p.reference_samples or p.state_shape[0]
    if isinstance(field_, FFJORDField):  # its noise is per sample: the reference solves the whole batch
        n_ref = p.state_shape[0]
    reference = reference_solution(field_, y0[:n_ref], p)
    counted = Counted(field_)
    params = list(field_.parameters())
    grad_ref = None  # neuralode's direct backprop, measured first
    rows: list[Row] = []
    bare_calls = 20
    t0 = torch.zeros((), device=device)

    def bare() -> None:
        with torch.no_grad():
            for _ in range(bare_calls):
                field_(t0, y0)

    def runner(solve: Callable, mode: str):
        def run():
            """Solve (and backprop); returns the solution at every output time and the forward's NFE."""
            counted.calls = 0
            if mode == "forward":
                with torch.no_grad():
                    return solve(counted, y0, p, mode), counted.calls
            for q in params:
                q.grad = None
            out = solve(counted, y0.detach().requires_grad_(True), p, mode)
            nfe_forward = counted.calls
            if out is not None:
                (out * cotangent).sum().backward()
            return out, nfe_forward
        return run

    for library, solve in LIBRARIES.items():
        if solve is None:
            rows.append(Row(library, "forward", note="not installed"))
    bare_seconds = math.nan
    for mode in MODES:
        timed: dict[str, Callable] = {}
        for library, solve in LIBRARIES.items():
            if solve is None:
                continue
            run = runner(solve, mode)
            try:
                out, nfe_forward = run()
            except Exception as exc:  # a peer that cannot do this problem: say so, go on
                rows.append(Row(library, mode, note=f"failed: {type(exc).__name__}: {exc}"[:120]))
                continue
            if out is None:
                rows.append(Row(library, mode, note="n/a"))
                continue
            row = Row(library, mode, nfe_forward=nfe_forward,
                      nfe_backward=None if mode == "forward" else counted.calls - nfe_forward)
            if mode == "forward":
                row.error = float((out[-1, :n_ref].double() - reference).abs().max())
            else:
                grad = torch.cat([q.grad.reshape(-1) for q in params])
                if grad_ref is None:
                    grad_ref = grad.clone()
                row.grad_diff = float((grad - grad_ref).norm() / grad_ref.norm())
            rows.append(row)
            timed[library] = run
        if mode == "forward":
            timed["bare"] = bare
        medians, runs = interleaved_medians(timed, device, repeats, warmup, min_seconds, max_seconds)
        for row in rows:
            if row.mode == mode and row.library in medians:
                row.seconds, row.runs = medians[row.library], runs
                print(f"  {row.library:12s} {MODE_NAMES[mode]:28s} {1e3 * row.seconds:9.2f} ms", flush=True)
        if mode == "forward":
            bare_seconds = medians["bare"] / bare_calls

    order = list(LIBRARIES)
    rows.sort(key=lambda r: (order.index(r.library), MODES.index(r.mode)))
    return Result(p, bare_seconds, rows)


# --------------------------------------------------------------------------- reporting
def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(result: Result) -> list[str]:
    p = result.problem
    lines = [
        f"### {p.describe()}",
        "",
        f"One bare func call (no grad): {1e3 * result.bare_call:.3f} ms. "
        f"Error reference: {p.describe_reference()}.",
        "",
        "| library | run | time [ms] | runs | vs torchdiffeq | NFE fwd | NFE bwd | time / (NFE x call) "
        "| max err vs float64 | grad rel. diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.rows:
        if r.seconds is None:
            lines.append(f"| {r.library} | {MODE_NAMES[r.mode] if r.note != 'not installed' else '-'} | "
                         f"{r.note} | | | | | | | |")
            continue
        peer = result.get("torchdiffeq", r.mode)
        ratio = r.seconds / peer.seconds if peer else None
        per_call = r.seconds / (r.nfe_forward * result.bare_call) if r.mode == "forward" and r.nfe_forward else None
        lines.append(
            f"| {r.library} | {MODE_NAMES[r.mode]} | {1e3 * r.seconds:.2f} | {r.runs} | {fmt(ratio, '.2f')}x | "
            f"{r.nfe_forward} | {fmt(r.nfe_backward, 'd')} | {fmt(per_call, '.2f')} | {fmt(r.error, '.2e')} | "
            f"{fmt(r.grad_diff, '.1e')} |"
        )
    return lines


def verdicts(results: list[Result]) -> list[str]:
    lines = []

    def verdict(name: str, value: float | None, limit: float, what: str) -> None:
        if value is None:
            lines.append(f"- n/a  {name}: could not be measured ({what})")
        else:
            ok = value <= limit
            lines.append(f"- {'PASS' if ok else 'MISS'} {name}: {value:.2f} (target <= {limit}; {what})")

    for tiny in (r for r in results if r.problem.make_field is TinyField):
        row = tiny.get("neuralode", "forward")
        value = row.seconds / (row.nfe_forward * tiny.bare_call) if row else None
        verdict(f"tiny field, {tiny.problem.method} forward: time / (NFE x bare call)", value,
                TINY_OVERHEAD_TARGET, "neuralode")
        for other in ("torchdiffeq", "torchode"):
            row = tiny.get(other, "forward")
            if row:
                lines.append(f"  - for comparison, {other}: {row.seconds / (row.nfe_forward * tiny.bare_call):.2f}")

    for conv, mode in ((r, m) for r in results if r.problem.make_field is ConvField
                       for m in ("forward", "direct", "adjoint")):
        ours, peer = conv.get("neuralode", mode), conv.get("torchdiffeq", mode)
        value = ours.seconds / peer.seconds if ours and peer else None
        verdict(f"conv field, {MODE_NAMES[mode]}: time vs torchdiffeq", value, CONV_TIME_TARGET,
                "neuralode / torchdiffeq")

    for result in results:
        if not result.problem.adaptive:
            continue
        ours, peer = result.get("neuralode", "seminorm"), result.get("torchdiffeq", "adjoint")
        value = ours.nfe_backward / peer.nfe_backward if ours and peer else None
        what = (f"{ours.nfe_backward} vs {peer.nfe_backward} backward NFE" if ours and peer
                else "torchdiffeq missing")
        verdict(f"{result.problem.name}: seminorm adjoint backward NFE vs torchdiffeq's default adjoint",
                value, SEMINORM_NFE_TARGET, what)

    # Issue 14.
    for tiny in (r for r in results if r.problem.make_field is TinyField and r.problem.adaptive):
        ours = tiny.get("neuralode", "forward")
        for peer, limit in (("torchdiffeq", TINY_VS_TORCHDIFFEQ_TARGET), ("torchode", TINY_VS_TORCHODE_TARGET)):
            other = tiny.get(peer, "forward")
            verdict(f"tiny field, dopri5 forward: time vs {peer}", ours.seconds / other.seconds if ours and other else None,
                    round(limit, 2), f"neuralode / {peer}")
    for result in results:
        mode = TRAINING_STEPS.get(result.problem.make_field)
        if mode is None:
            continue
        ours, peer = result.get("neuralode", mode), result.get("torchdiffeq", mode)
        verdict(f"{result.problem.name}: training step ({MODE_NAMES[mode]}) vs torchdiffeq",
                ours.seconds / peer.seconds if ours and peer else None, TRAINING_STEP_TARGET, "neuralode / torchdiffeq")
    return lines


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU " + (platform.processor() or platform.machine())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, for stable numbers)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (the median is reported)")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="repeat fast measurements beyond --repeats until this much time has passed")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="fewer repeats (at least one) for slow measurements after this much time")
    parser.add_argument("--warmup", type=int, default=0, help="untimed runs before timing, besides the counted run")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 0.3 to 10 s per measurement")
    parser.add_argument("--problems", choices=tuple(PROBLEM_SETS), default="all", help="which problems to run")
    parser.add_argument("--compile", action="store_true",
                        help="also neuralode with options={'compile': True} (compiles for a minute or more)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "outputs/bench/ode.md")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.compile:
        LIBRARIES["neuralode compiled"] = solve_neuralode_compiled
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA device; run with --device cpu")
    torch.set_num_threads(args.threads)
    repeats, min_seconds, max_seconds = (3, 0.3, 10.0) if args.quick else (args.repeats, args.min_seconds,
                                                                             args.max_seconds)
    warmup = args.warmup

    chosen = [p for p in PROBLEMS if args.problems == "all" or p.make_field is PROBLEM_SETS[args.problems]]
    results = []
    for p in chosen:
        print(f"{p.describe()}", flush=True)
        results.append(bench_problem(p, device, repeats, warmup, min_seconds, max_seconds))

    header = [
        "# ODE solver benchmark: neuralode vs torchdiffeq vs torchode",
        "",
        f"- device: {device_name(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
        f"median of {repeats} runs, libraries interleaved (more runs for fast solves, to fill {min_seconds:g} s; "
        f"fewer, at least one, for slow ones past {max_seconds:g} s), after the counted run"
        + (f" and {warmup} warm-up run{'s' if warmup != 1 else ''}" if warmup else ""),
        f"- peers: torchdiffeq {VERSIONS['torchdiffeq']}, torchode {VERSIONS['torchode']} (eager, not jit-scripted)",
        "- NFE are counted by one call counter around the field for every library; NFE bwd is the "
        "adjoint's (direct backprop calls the field only in the forward).",
        "- torchode: forward and direct backprop use its per-sample step sizes and PID controller "
        "(pcoeff 0.2, icoeff 0.5); its adjoint is JointBacksolveAdjoint; it has no seminorm; "
        "its rk4 is the classic tableau on its generic explicit RK (1.0.1 ships none).",
        "- grad rel. diff: ||grad params - neuralode direct|| / ||neuralode direct||, a check that "
        "every library differentiates the same loss.",
        "- targets of issue 2: tiny field time per solve <= 1.6x NFE x bare call; conv field <= 1.05x "
        "torchdiffeq's time; seminorm adjoint backward NFE <= 0.6x torchdiffeq's default adjoint.",
        "- targets of issue 14: the tiny dopri5 solve <= 0.5x torchdiffeq's time and <= 0.67x torchode's; a "
        "training step of the three paper workloads (the MNIST ODE block with the adjoint, the latent ODE and "
        "FFJORD 2-D with backprop, as their experiments train) <= 0.5x torchdiffeq's time.",
        "",
        "## Targets",
        "",
        *verdicts(results),
        "",
        "## Results",
        "",
    ]
    body = []
    for result in results:
        body += table(result) + [""]
    text = "\n".join(header + body)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print()
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
