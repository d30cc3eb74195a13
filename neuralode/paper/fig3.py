"""Figure 3: statistics of a trained ODE-Net, from its checkpoint and its ``metrics.jsonl``.

(a) forward NFE against the numerical error of the final state, as the tolerance sweeps
    1e-1 .. 1e-6 (error: root-mean-square of h(1) - h_ref(1) against a 1e-8 solve, the norm
    the step-size control uses);
(b) forward NFE against forward wall time, same sweep;
(c) backward NFE against forward NFE over training (the paper: about one half);
(d) forward NFE against training epoch.

The figure is of the paper's ODE-Net (``mnist_odenet``: implicit Adams, as Section 3 says the
MNIST experiments used); (c) and (d) also show a second run, by default the dopri5 variant
(``mnist_odenet_dopri5``, the torchdiffeq example's solver), counted the same way. NFE counts
calls of the field: a multistep step makes two (predictor and corrector), a dopri5 step six;
a backward call evaluates f and its vector-Jacobian product together and counts once.

Beside (c), one adjoint training step of the trained model is measured:
- by solver (the run's adams, and dopri5): test error, NFE, accepted and rejected steps and the
  orders a variable-order method chose, forward and backward, which is what explains the ratio;
- scipy's LSODA (ODEPACK, the paper's own solver family) as a cross-check, forward only and one
  image a solve (its Jacobian workspace grows with the square of the state), beside adams solving
  the same images the same way: test error and NFE;
- by adjoint error norm: ``component max`` (the largest RMS over the parts z, a and each
  parameter's adjoint: ours by default, and what torchdiffeq did when the paper was written),
  ``global RMS`` (one RMS over the whole augmented state [z, a, a_theta], where the many small
  parameter-adjoint entries dilute the error) and ``seminorm`` (z and a only, Kidger et al. 2021).

The sweep solves the trained ODE block on a batch of test images after the trained
downsampling, in float64 so that the reference solve is exact to far below the tolerances.
Output: ``fig3.png``, ``fig3.csv`` (every point of every panel) and the figure in TensorBoard
under ``<out>/tensorboard/fig3``.

    python -m neuralode figure fig3 --scale smoke           # trains (or reuses) the smoke ODE-Nets
    python -m neuralode figure fig3 outputs/<run dir>       # any ODE-Net run (or checkpoint file)
    python -m neuralode figure fig3 RUN --variant OTHER     # (c), (d) of RUN beside those of OTHER
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from neuralode.ode import collect_stats, last_stats, odeint
from neuralode.ode.problem import rms_norm
from neuralode.paper.common import (Stages, claims_table, fmt, markdown_table, out_dir, save_figure, scale_settings,
                                    smoke_threads, verdict, write_csv)
from neuralode.paper.runs import add_figure_args, checkpoint_in, ensure_runs_or_exit, load_trained, mnist_runs, progress
from neuralode.train.loggers import read_metrics

TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
REFERENCE_TOL = 1e-8


class NotAnODENetError(ValueError):
    """The checkpoint is not of a model with an ODE block."""


def checkpoint_and_metrics(path: str | Path) -> tuple[Path, Path]:
    """A run folder (its last.pt, else best.pt) or a checkpoint file, and the run's metrics.jsonl."""
    path = Path(path)
    if path.is_dir():
        ckpt = checkpoint_in(path)
        if ckpt is None:
            raise FileNotFoundError(f"{path} holds no last.pt or best.pt; pass an ODE-Net run folder or checkpoint")
    elif path.is_file():
        ckpt = path
    else:
        raise FileNotFoundError(f"{path} does not exist; pass an ODE-Net run folder or checkpoint file")
    metrics = ckpt.parent / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} is missing: panels (c) and (d) need the run's metrics.jsonl")
    return ckpt, metrics


def load_model_and_batch(ckpt: Path, images: int):
    """The trained ODE-Net (float64, eval mode), up to ``images`` test images and their labels, on CPU."""
    task, data, state = load_trained(ckpt)
    net = getattr(task, "net", None)
    if net is None or not hasattr(net, "ode") or not hasattr(net, "downsampling"):
        raise NotAnODENetError(f"{ckpt} holds a {type(net).__name__}, not an ODE-Net (downsampling + ODE block)")
    x, y, seen = [], [], 0
    for inputs, labels in data.eval_dataloader() if images > 0 else ():
        x.append(inputs)
        y.append(labels)
        seen += len(labels)
        if seen >= images:
            break
    x = torch.cat(x)[:images] if x else torch.zeros(0)
    y = torch.cat(y)[:images] if y else torch.zeros(0, dtype=torch.long)
    return net.double().eval(), x.double(), y, state


#: The adjoint's error norms measured beside panel (c): name -> adjoint_options["norm"].
ADJOINT_NORMS = {"component max (ours; torchdiffeq 2018)": None, "global RMS over [z, a, a_theta]": rms_norm,
                 "seminorm (z, a)": "seminorm"}


#: Tolerances of the adjoint-norm measurement besides the run's own: tighter ones make the forward
#: solve take more steps, which shows whether the backward solve follows.
NORM_TOLERANCES = (1e-4, 1e-5)


@dataclass
class NormPoint:
    norm: str
    tol: float
    nfe_forward: int
    nfe_backward: int

    @property
    def ratio(self) -> float:
        return self.nfe_backward / self.nfe_forward


@contextmanager
def trained_solver_restored(net):
    """Solve ``net``'s ODE block with other settings inside the block (``net.ode.solver = ...``);
    afterwards the trained settings are back and no gradient is left on the parameters."""
    trained = net.ode.solver
    try:
        yield trained
    finally:
        net.ode.solver = trained
        net.zero_grad()


def adjoint_step(net, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step's forward and backward pass (cross-entropy on ``x``, ``y``), no update."""
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()


def adjoint_nfe_by_norm(net, x: torch.Tensor, y: torch.Tensor, norms: dict = ADJOINT_NORMS,
                        tolerances: tuple[float, ...] = NORM_TOLERANCES) -> list[NormPoint]:
    """Forward and backward NFE of one adjoint training step (cross-entropy on ``x``, ``y``)
    under each adjoint error norm, at the run's tolerance and at ``tolerances`` (rtol = atol)."""
    points = []
    with trained_solver_restored(net) as trained:
        for tol in dict.fromkeys((trained.rtol, *tolerances)):
            for name, norm in norms.items():
                options = {k: v for k, v in (trained.adjoint_options or {}).items() if k != "norm"}
                net.ode.solver = replace(trained, gradient="adjoint", rtol=tol, atol=tol,
                                         adjoint_options={**options, **({"norm": norm} if norm else {})})
                with collect_stats() as stats:
                    adjoint_step(net, x, y)
                points.append(NormPoint(name, tol, stats.nfe_forward, stats.nfe_backward))
    return points


@dataclass
class SweepPoint:
    tol: float
    nfe: int
    error: float
    forward_ms: float


def tolerance_sweep(net, x: torch.Tensor, tolerances=TOLERANCES, repeats: int = 1) -> list[SweepPoint]:
    """Solve the ODE block at each tolerance; error of h(1) against a ``REFERENCE_TOL`` solve."""
    block = net.ode
    # A tolerance sweep needs an adaptive method: the paper's dopri5 unless the run used another.
    method = block.solver.method if block.solver.method not in ("euler", "midpoint", "heun", "rk4") else "dopri5"
    t = block.t.double()
    points = []
    with torch.no_grad():
        h0 = net.downsampling(x)
        reference = odeint(block.func, h0, t, rtol=REFERENCE_TOL, atol=REFERENCE_TOL, method=method)[-1]
        for tol in tolerances:
            times = []
            for _ in range(repeats):
                with collect_stats() as stats:
                    started = time.perf_counter()
                    h1 = odeint(block.func, h0, t, rtol=tol, atol=tol, method=method)[-1]
                    times.append(time.perf_counter() - started)
            error = float((h1 - reference).pow(2).mean().sqrt())
            points.append(SweepPoint(tol, stats.nfe_forward, error, 1000 * min(times)))
    return points


def training_nfe(records: list[dict]) -> list[dict]:
    """Records that carry training NFE: epoch, step, forward and backward NFE per step."""
    return [{"epoch": r["epoch"], "step": r["step"], "nfe_forward": r["nfe_forward"], "nfe_backward": r["nfe_backward"]}
            for r in records if "nfe_forward" in r and "nfe_backward" in r]


def backward_forward_ratio(nfe: list[dict]) -> float | None:
    """Mean over training of backward NFE / forward NFE (paper: about 0.5)."""
    ratios = [r["nfe_backward"] / r["nfe_forward"] for r in nfe if r["nfe_forward"]]
    return sum(ratios) / len(ratios) if ratios else None



# --------------------------------------------------------------------------- one step, by solver
@dataclass
class SolveProfile:
    """What one solve of a training step did: field calls, steps, and the order of each accepted
    step (variable-order methods only)."""

    nfe: int
    accepted: int | None  # None: not counted (scipy takes its own steps inside one call)
    rejected: int | None
    orders: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, stats) -> "SolveProfile":
        return cls(stats.nfe, stats.n_accepted, stats.n_rejected, list(stats.orders))

    @property
    def mean_order(self) -> float | None:
        return sum(self.orders) / len(self.orders) if self.orders else None

    def orders_text(self) -> str:
        if not self.orders:
            return "-"
        return f"{min(self.orders)}-{max(self.orders)} (mean {self.mean_order:.1f}, last {self.orders[-1]})"


@dataclass
class StepProfile:
    """One adjoint training step of a trained model, solved by ``solver``; ``test_error`` of the
    model solved that way on ``images`` test images."""

    model: str
    solver: str
    test_error: float | None
    images: int
    forward: SolveProfile
    backward: SolveProfile | None  # None: forward solves only
    agree: int | None = None  # per-image solves: images predicted as the first solver of the list did

    @property
    def ratio(self) -> float | None:
        return None if self.backward is None else self.backward.nfe / self.forward.nfe


#: The solvers of the trained model's step profile: label -> (method, options).
PROFILE_SOLVERS = {"adams": ("adams", {}), "dopri5": ("dopri5", {})}

#: The cross-check on the paper's own solver family (LSODA: scipy's ODEPACK, as LSODE/VODE),
#: forward only and one image a solve, beside the core's adams solving the same images the same
#: way: LSODA allocates an n x n Jacobian workspace for its stiff mode (n: the state's size). One
#: image's 64x6x6 features (n = 2,304) take 42 MB; a batch of 128 (700 GB) or the adjoint's
#: augmented state with the parameters' adjoints (n > 80,000 for one image: over 50 GB) do not fit.
PER_IMAGE_SOLVERS = {"adams, one image a solve": ("adams", {}),
                     "LSODA (scipy), one image a solve": ("scipy_solver", {"solver": "LSODA"})}


def scipy_available() -> bool:
    try:
        import scipy.integrate  # noqa: F401
    except ImportError:
        return False
    return True


def solved_by(trained, method: str, options: dict):
    """The trained solver settings with ``method`` (and its options) for both the forward solve
    and the adjoint's backward one, at the run's tolerances and adjoint norm."""
    return replace(trained, method=method, options=dict(options), gradient="adjoint", adjoint_method=None,
                   adjoint_options={k: v for k, v in (trained.adjoint_options or {}).items() if k == "norm"})


def test_error_of(net, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> float:
    with torch.no_grad():
        wrong = sum(int((net(x[i:i + batch]).argmax(1) != y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return wrong / len(x)


def step_profiles(net, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, model: str,
                  solvers: dict = PROFILE_SOLVERS) -> list[StepProfile]:
    """For each solver: the model's test error on ``x_test`` and one adjoint training step on
    ``x``, ``y`` (its forward and backward solves' statistics)."""
    profiles = []
    with trained_solver_restored(net) as trained:
        for label, (method, options) in solvers.items():
            net.ode.solver = solved_by(trained, method, options)
            error = test_error_of(net, x_test, y_test) if len(x_test) else None
            adjoint_step(net, x, y)
            forward, backward = SolveProfile.of(last_stats()), SolveProfile.of(last_stats(backward=True))
            profiles.append(StepProfile(model, label, error, len(x_test), forward, backward))
    return profiles


def per_image_profiles(net, x: torch.Tensor, y: torch.Tensor, model: str,
                       solvers: dict = PER_IMAGE_SOLVERS) -> list[StepProfile]:
    """For each solver: the model's test error on ``x`` solving one image at a time, and the mean
    forward NFE of those solves (steps are not counted: scipy takes its own inside one call)."""
    profiles, first = [], None
    with trained_solver_restored(net) as trained:
        for label, (method, options) in solvers.items():
            net.ode.solver = solved_by(trained, method, options)
            predicted, nfe = [], 0
            with torch.no_grad():
                for i in range(len(x)):
                    with collect_stats() as stats:
                        predicted.append(int(net(x[i:i + 1]).argmax(1).item()))
                    nfe += stats.nfe_forward
            first = predicted if first is None else first
            n = max(len(x), 1)
            profiles.append(StepProfile(model, label, sum(p != int(t) for p, t in zip(predicted, y)) / n, len(x),
                                        SolveProfile(round(nfe / n, 1), None, None), None,
                                        sum(a == b for a, b in zip(predicted, first))))
    return profiles


def step_explanation(profile: StepProfile) -> str:
    """Why the ratio is what it is, in the step profile's own numbers."""
    f, b = profile.forward, profile.backward

    def steps(p: SolveProfile) -> str:
        return "" if p.accepted is None else f" in {p.accepted} steps ({p.rejected} rejected)"

    if b is None:
        return (f"{profile.model} model solved by {profile.solver}: {f.nfe} field calls a forward solve, test error "
                f"{100 * profile.test_error:.2f}% on {profile.images} images, the same class as the first "
                f"per-image solver for {profile.agree} of them.")
    text = (f"{profile.model} model solved by {profile.solver}: the forward solve made {f.nfe} field calls{steps(f)}, "
            f"the backward {b.nfe}{steps(b)}; backward / forward {profile.ratio:.2f} in calls")
    text += "." if f.accepted is None else f", {b.accepted / max(f.accepted, 1):.2f} in accepted steps."
    if f.orders and b.orders:
        text += (f" Orders: forward {f.orders_text()}, backward {b.orders_text()} (the backward solve starts "
                 "again at order 1, from an empty history).")
    return text


@dataclass
class TrainingNFE:
    """The training NFE of one run (panels c and d), labelled by its solver."""

    label: str
    records: list[dict]

    @property
    def ratio(self) -> float | None:
        return backward_forward_ratio(self.records)


@dataclass
class Measurements:
    """Everything Figure 3 shows: the trained run's sweep, the training NFE of the run and of
    the runs drawn beside it (the run first), and the trained model's one-step measurements."""

    sweep: list[SweepPoint]
    training: list[TrainingNFE]
    norms: list[NormPoint] = field(default_factory=list)
    profiles: list[StepProfile] = field(default_factory=list)

    @property
    def nfe(self) -> list[dict]:
        return self.training[0].records


def make_figure(m: Measurements, title: str):
    import matplotlib.pyplot as plt

    sweep, norms, runs = m.sweep, m.norms, m.training

    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    (ax_a, ax_b), (ax_c, ax_d) = axes
    nfes = [p.nfe for p in sweep]
    ax_a.plot(nfes, [p.error for p in sweep], "o-")
    for p in sweep:
        ax_a.annotate(f"tol {p.tol:.0e}", (p.nfe, p.error), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax_a.set(xlabel="NFE forward", ylabel="numerical error (RMS of h(1) - h_ref(1))", yscale="log", title="(a) NFE vs error")
    ax_b.plot(nfes, [p.forward_ms for p in sweep], "o-")
    ax_b.set(xlabel="NFE forward", ylabel="forward time (ms)", title="(b) NFE vs time")
    forward_all = [r["nfe_forward"] for run in runs for r in run.records] + [p.nfe_forward for p in norms]
    if forward_all:
        span = [min(forward_all), max(forward_all)]
        ax_c.plot(span, [0.5 * v for v in span], "k--", lw=1, label="paper: backward = forward / 2")
    for i, run in enumerate(runs):
        if not run.records:
            continue
        forward = [r["nfe_forward"] for r in run.records]
        backward = [r["nfe_backward"] for r in run.records]
        if i == 0:
            ax_c.scatter(forward, backward, s=12, c=[r["epoch"] for r in run.records], cmap="viridis",
                         label=f"{run.label} (colour: epoch)")
        else:
            ax_c.scatter(forward, backward, s=12, marker="x", color=f"C{i}", label=run.label)
        ax_c.plot([min(forward), max(forward)], [run.ratio * min(forward), run.ratio * max(forward)], color=f"C{i + 3}",
                  lw=1, label=f"{run.label}: mean ratio {run.ratio:.2f}")
        ax_d.plot([r["epoch"] for r in run.records], forward, "o-" if i == 0 else "x--", ms=3, label=run.label)
    markers = dict(zip(dict.fromkeys(p.norm for p in norms), "s^Dv"))
    for name, marker in markers.items():
        mine = [p for p in norms if p.norm == name]
        ax_c.scatter([p.nfe_forward for p in mine], [p.nfe_backward for p in mine], marker=marker, s=40,
                     edgecolors="k", label=f"trained, tol {', '.join(f'{p.tol:.0e}' for p in mine)}: {name}")
    if forward_all:
        ax_c.legend(fontsize=6)
    if len(runs) > 1 and any(run.records for run in runs):
        ax_d.legend(fontsize=7)
    ax_c.set(xlabel="NFE forward (per training step)", ylabel="NFE backward", title="(c) NFE forward vs backward")
    ax_d.set(xlabel="epoch", ylabel="NFE forward (per training step)", title="(d) NFE over training")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def norm_spread(norms: list[NormPoint]) -> float:
    """The largest difference in backward / forward NFE between the norms at one tolerance."""
    by_tol: dict[float, list[float]] = {}
    for p in norms:
        by_tol.setdefault(p.tol, []).append(p.ratio)
    return max(max(r) - min(r) for r in by_tol.values())


def about_half(ratio: float) -> bool:
    """The paper's "roughly half", read as 0.35-0.65."""
    return 0.35 <= ratio <= 0.65


def claims(m: Measurements) -> list[list[str]]:
    """Figure 3's four panels as claims on the run (the paper's solver), with our numbers and verdicts."""
    sweep, nfe, norms, label = m.sweep, m.nfe, m.norms, m.training[0].label
    rows = []
    if len(sweep) > 1:
        loose, tight = sweep[0], sweep[-1]
        rows.append(["(a) numerical error falls as forward NFE rises", f"NFE {loose.nfe} -> {tight.nfe}: error "
                     f"{loose.error:.1e} -> {tight.error:.1e}", "yes", verdict(tight.nfe > loose.nfe and tight.error < loose.error)])
        r = float(torch.corrcoef(torch.tensor([[p.nfe for p in sweep], [p.forward_ms for p in sweep]], dtype=torch.float64))[0, 1])
        rows.append(["(b) forward time proportional to forward NFE", f"correlation {r:.3f}", "linear", verdict(r > 0.9)])
    ratio = backward_forward_ratio(nfe)
    if ratio is not None:
        rows.append(["(c) backward NFE about half the forward NFE, over training", f"{ratio:.2f} ({label})", "about 0.5",
                     verdict(about_half(ratio))])
    if norms:
        ratios = [p.ratio for p in norms]
        tols = sorted({p.tol for p in norms}, reverse=True)
        rows.append([f"(c) the same on the trained model, each of {len({p.norm for p in norms})} adjoint norms at tol "
                     f"{tols[0]:.0e} to {tols[-1]:.0e}", f"{min(ratios):.2f}-{max(ratios):.2f}", "about 0.5",
                     verdict(any(about_half(r) for r in ratios))])
    grows = nfe_growth(nfe)
    if grows is not None:
        rows.append(["(d) forward NFE grows over training", grows[0], "grows", verdict(grows[1])])
    return rows


def nfe_growth(nfe: list[dict]) -> tuple[str, bool] | None:
    """Forward NFE of the first evaluation against the last, when the run spans epochs."""
    if len({r["epoch"] for r in nfe}) < 2:
        return None
    first, last = nfe[0], nfe[-1]
    return (f"{first['nfe_forward']:.1f} (epoch {first['epoch']}) -> {last['nfe_forward']:.1f} (epoch {last['epoch']})",
            last["nfe_forward"] > first["nfe_forward"])


def by_epoch(nfe: list[dict]) -> str:
    """Forward NFE per training step at the end of each epoch."""
    last: dict[int, float] = {}
    for r in nfe:
        last[r["epoch"]] = r["nfe_forward"]
    return ", ".join(f"{e}: {v:.1f}" for e, v in sorted(last.items())) or "-"


def training_table(runs: list[TrainingNFE]) -> list[str]:
    rows = []
    for i, run in enumerate(runs):
        grows = nfe_growth(run.records)
        rows.append([run.label + ("" if i == 0 else " (beside)"), fmt(run.ratio, ".2f"),
                     "-" if grows is None else grows[0], by_epoch(run.records)])
    return [markdown_table(["run (solver)", "backward / forward NFE over training", "forward NFE, first -> last",
                            "forward NFE by epoch"], rows)]


def profile_table(profiles: list[StepProfile]) -> list[str]:
    def steps(p: SolveProfile) -> str:
        return "-" if p.accepted is None else f"{p.accepted} ({p.rejected})"

    rows = [[p.model, p.solver, "-" if p.test_error is None else f"{100 * p.test_error:.2f}% of {p.images}",
             p.forward.nfe, steps(p.forward), p.forward.orders_text(),
             *(["-"] * 3 if p.backward is None else [p.backward.nfe, steps(p.backward), p.backward.orders_text()]),
             fmt(p.ratio, ".2f")] for p in profiles]
    return [markdown_table(["trained model", "solved by", "test error", "NFE fwd", "steps fwd (rejected)", "orders fwd",
                            "NFE bwd", "steps bwd (rejected)", "orders bwd", "bwd / fwd"], rows)]


def summary_markdown(m: Measurements, scale: str, source: str) -> str:
    sweep, norms, profiles = m.sweep, m.norms, m.profiles
    ratio = backward_forward_ratio(m.nfe)
    return "\n".join([
        f"# Figure 3: statistics of a trained ODE-Net (scale: {scale})",
        "",
        *claims_table(claims(m)),
        f"From `{source}` (solver: {m.training[0].label}). Tolerance sweep of the trained ODE block (float64, "
        f"error against a {REFERENCE_TOL:g} solve):",
        "",
        markdown_table(["tol", "NFE forward", "RMS error of h(1)", "forward time (ms)"],
                       [[f"{p.tol:.0e}", p.nfe, f"{p.error:.2e}", f"{p.forward_ms:.1f}"] for p in sweep]),
        f"Backward NFE / forward NFE over training: **{'-' if ratio is None else f'{ratio:.2f}'}** (paper: about 0.5). "
        "NFE counts field calls (a multistep step makes two, a dopri5 step six; a backward call evaluates f and "
        "its vector-Jacobian product and counts once), per training step, mean over the steps since the last "
        "evaluation:",
        "",
        *training_table(m.training),
        *([
            "One adjoint training step of each trained model (the sweep's test images, float64, the run's tolerances), "
            "by solver; test error on the first test images. Steps: accepted (rejected). Orders: those of the "
            "accepted steps of a variable-order method.",
            "",
            *profile_table(profiles),
            *[step_explanation(p) for p in profiles],
            "",
        ] if profiles else []),
        *([
            "Backward / forward NFE of one adjoint training step of the trained model, by the adjoint's error "
            "norm (the run's solver, the sweep's test images, float64):",
            "",
            markdown_table(["tol", "adjoint error norm", "NFE forward", "NFE backward", "backward / forward"],
                           [[f"{p.tol:.0e}", p.norm, p.nfe_forward, p.nfe_backward, f"{p.ratio:.2f}"] for p in norms]),
            "The backward solve integrates z backward beside a and a_theta, so any norm that counts z sees the "
            "forward's error again; leaving a_theta out (seminorm) or diluting it (global RMS) changes the "
            f"ratio by at most {norm_spread(norms):.2f} at any one tolerance here.",
            "",
        ] if norms else []),
    ])


CSV_HEADERS = ["panel", "run", "tol", "epoch", "step", "nfe_forward", "nfe_backward", "error", "forward_ms",
               "adjoint_norm", "solver", "steps_forward", "rejected_forward", "orders_forward", "steps_backward",
               "rejected_backward", "orders_backward"]


def csv_rows(m: Measurements) -> list[list]:
    label = m.training[0].label
    blank = [""] * 7
    rows = [["a_b", label, p.tol, "", "", p.nfe, "", p.error, p.forward_ms, "", *blank] for p in m.sweep]
    rows += [["c_d", run.label, "", r["epoch"], r["step"], r["nfe_forward"], r["nfe_backward"], "", "", "", *blank]
             for run in m.training for r in run.records]
    rows += [["c_norm", label, p.tol, "", "", p.nfe_forward, p.nfe_backward, "", "", p.norm, *blank] for p in m.norms]
    for p in m.profiles:
        b = p.backward or SolveProfile("", "", "")
        rows.append(["c_step", p.model, "", "", "", p.forward.nfe, b.nfe, p.test_error, "", "", p.solver,
                     p.forward.accepted, p.forward.rejected, " ".join(map(str, p.forward.orders)), b.accepted,
                     b.rejected, " ".join(map(str, b.orders))])
    return rows


def write_outputs(m: Measurements, folder: Path, title: str, tensorboard: bool = True, scale: str = "smoke",
                  source: str = "-") -> dict[str, Path]:
    folder = Path(folder)
    (folder / "fig3.md").write_text(summary_markdown(m, scale, source))
    write_csv(folder / "fig3.csv", CSV_HEADERS, csv_rows(m))
    png = save_figure(make_figure(m, title), folder, "fig3", m.nfe[-1]["step"] if m.nfe else 0, tensorboard)
    return {"png": png, "csv": folder / "fig3.csv", "md": folder / "fig3.md"}


def solver_label(net) -> str:
    s = net.ode.solver
    return f"{s.method} {s.rtol:g}"


def load_or_exit(run: Path, images: int):
    try:
        ckpt, metrics = checkpoint_and_metrics(run)
        return (ckpt, metrics, *load_model_and_batch(ckpt, images))
    except (FileNotFoundError, NotAnODENetError) as error:
        raise SystemExit(f"error: {error}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode figure fig3", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=None,
                        help="an ODE-Net run folder or checkpoint (default: train or reuse the --scale run)")
    parser.add_argument("--variant", type=Path, default=None,
                        help="a second ODE-Net run whose (c) and (d) are drawn beside (default without RUN: the "
                             "dopri5 variant at --scale)")
    parser.add_argument("--no-variant", action="store_true", help="draw the run alone")
    parser.add_argument("--images", type=int, default=None, help="test images in the tolerance sweep and the step")
    parser.add_argument("--test-images", type=int, default=None, help="test images scored by each solver")
    add_figure_args(parser)
    args = parser.parse_args(argv)
    smoke_threads(args.scale)
    started = time.perf_counter()
    run, variant = args.run, args.variant
    if run is None:
        names = ["mnist_odenet"] + ([] if args.no_variant or variant is not None else ["mnist_odenet_dopri5"])
        specs = mnist_runs(args.scale, names)
        ensure_runs_or_exit(specs, args.scale, args.overrides, args.jobs)
        run = specs[0].run_dir
        variant = specs[1].run_dir if len(specs) > 1 else variant
    if args.no_variant:
        variant = None
    settings = scale_settings("fig3", args.scale)
    for key in ("images", "test_images"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    images, test_images = settings["images"], settings.get("test_images", settings["images"])
    settings["per_image_images"] = min(settings.get("per_image_images", 0), max(images, test_images))

    stage = Stages("fig3")
    stage(f"loading {run} and {max(images, test_images)} test images")
    ckpt, metrics, net, x_all, y_all, state = load_or_exit(run, max(images, test_images))
    x, y = x_all[:images], y_all[:images]
    label = solver_label(net)
    stage(f"(a) and (b): forward solves at {len(TOLERANCES)} tolerances on {images} images")
    sweep = tolerance_sweep(net, x, repeats=settings["repeats"])
    stage("(d): the adjoint step at 3 tolerances x 3 norms")
    norms = adjoint_nfe_by_norm(net, x, y)
    stage(f"one adjoint step by solver, and each solver's error on {test_images} test images")
    m = Measurements(sweep, [TrainingNFE(label, training_nfe(read_metrics(metrics)))], norms,
                     step_profiles(net, x, y, x_all[:test_images], y_all[:test_images], label))
    per_image = settings.get("per_image_images", 0)
    if per_image and scipy_available():
        stage(f"LSODA cross-check, image by image on {per_image} images")
        m.profiles += per_image_profiles(net, x_all[:per_image], y_all[:per_image], label)
    if variant is not None:
        stage(f"the variant {variant}: its step by solver")
        _, other_metrics, other, *_ = load_or_exit(variant, 0)
        other_label = solver_label(other)
        m.training.append(TrainingNFE(other_label, training_nfe(read_metrics(other_metrics))))
        own = other.ode.solver
        m.profiles += step_profiles(other, x, y, x_all[:test_images], y_all[:test_images], other_label,
                                    {own.method: (own.method, dict(own.options or {}))})
    title = f"Figure 3: statistics of a trained ODE-Net (scale {args.scale}: {progress(state)}; {label})"
    paths = write_outputs(m, out_dir(args.out), title, tensorboard=not args.no_tensorboard, scale=args.scale,
                          source=str(ckpt))
    for p in m.sweep:
        print(f"  tol {p.tol:.0e}: NFE {p.nfe:4d}  error {p.error:.2e}  forward {p.forward_ms:.1f} ms")
    for r in m.training:
        print(f"backward/forward NFE over training, {r.label}: {fmt(r.ratio, '.2f')} (paper: about 0.5)")
    for p in m.norms:
        print(f"  tol {p.tol:.0e}, adjoint norm {p.norm}: NFE {p.nfe_forward} forward, {p.nfe_backward} backward "
              f"({p.ratio:.2f})")
    for p in m.profiles:
        print("  " + step_explanation(p))
    print(f"wrote {paths['png']} and {paths['csv']} from {ckpt} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
