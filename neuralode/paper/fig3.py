"""Figure 3: statistics of a trained ODE-Net, from its checkpoint and its ``metrics.jsonl``.

(a) forward NFE against the numerical error of the final state, as the tolerance sweeps
    1e-1 .. 1e-6 (error: root-mean-square of h(1) - h_ref(1) against a 1e-8 solve, the norm
    the step-size control uses);
(b) forward NFE against forward wall time, same sweep;
(c) backward NFE against forward NFE over training (the paper: about one half);
(d) forward NFE against training epoch.

Beside (c), the trained model's training step is measured once per adjoint error norm:
``component max`` (the largest RMS over the parts z, a and each parameter's adjoint: ours by
default, and what torchdiffeq did when the paper was written), ``global RMS`` (one RMS over the
whole augmented state [z, a, a_theta], where the many small parameter-adjoint entries dilute the
error) and ``seminorm`` (z and a only, Kidger et al. 2021). The ratio backward / forward NFE
depends on that choice, which is how we explain ours against the paper's 0.5.

The sweep solves the trained ODE block on a batch of test images after the trained
downsampling, in float64 so that the reference solve is exact to far below the tolerances.
Output: ``fig3.png``, ``fig3.csv`` (every point of every panel) and the figure in TensorBoard
under ``<out>/tensorboard/fig3``.

    python -m neuralode figure fig3 --scale smoke           # trains (or reuses) the smoke ODE-Net
    python -m neuralode figure fig3 outputs/<run dir>       # any ODE-Net run (or checkpoint file)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from neuralode.ode import collect_stats, odeint
from neuralode.ode.problem import rms_norm
from neuralode.paper.common import (add_figure_args, checkpoint_in, claims_table, verdict, ensure_runs_or_exit, load_trained, markdown_table,
                                    out_dir, progress, save_figure, scale_settings, smoke_threads, write_csv)
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
    batches = [batch for _, batch in zip(range(images), data.eval_dataloader())]
    x = torch.cat([b[0] for b in batches])[:images]
    y = torch.cat([b[1] for b in batches])[:images]
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


def adjoint_nfe_by_norm(net, x: torch.Tensor, y: torch.Tensor, norms: dict = ADJOINT_NORMS,
                        tolerances: tuple[float, ...] = NORM_TOLERANCES) -> list[NormPoint]:
    """Forward and backward NFE of one adjoint training step (cross-entropy on ``x``, ``y``)
    under each adjoint error norm, at the run's tolerance and at ``tolerances`` (rtol = atol)."""
    block = net.ode
    trained = block.solver
    points = []
    try:
        for tol in dict.fromkeys((trained.rtol, *tolerances)):
            for name, norm in norms.items():
                options = {k: v for k, v in (trained.adjoint_options or {}).items() if k != "norm"}
                block.solver = replace(trained, gradient="adjoint", rtol=tol, atol=tol,
                                       adjoint_options={**options, **({"norm": norm} if norm else {})})
                net.zero_grad()
                with collect_stats() as stats:
                    torch.nn.functional.cross_entropy(net(x), y).backward()
                points.append(NormPoint(name, tol, stats.nfe_forward, stats.nfe_backward))
    finally:
        block.solver = trained
        net.zero_grad()
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


def make_figure(sweep: list[SweepPoint], nfe: list[dict], title: str, norms: list[NormPoint] = ()):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    (ax_a, ax_b), (ax_c, ax_d) = axes
    nfes = [p.nfe for p in sweep]
    ax_a.plot(nfes, [p.error for p in sweep], "o-")
    for p in sweep:
        ax_a.annotate(f"tol {p.tol:.0e}", (p.nfe, p.error), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax_a.set(xlabel="NFE forward", ylabel="numerical error (RMS of h(1) - h_ref(1))", yscale="log", title="(a) NFE vs error")
    ax_b.plot(nfes, [p.forward_ms for p in sweep], "o-")
    ax_b.set(xlabel="NFE forward", ylabel="forward time (ms)", title="(b) NFE vs time")
    ratio = backward_forward_ratio(nfe)
    if nfe:
        forward = [r["nfe_forward"] for r in nfe]
        ax_c.scatter(forward, [r["nfe_backward"] for r in nfe], s=12, c=[r["epoch"] for r in nfe], cmap="viridis")
        span = [min(forward), max(forward)]
        ax_c.plot(span, [0.5 * v for v in span], "k--", lw=1, label="paper: backward = forward / 2")
        ax_c.plot(span, [ratio * v for v in span], "r-", lw=1, label=f"ours: mean ratio {ratio:.2f}")
        ax_d.plot([r["epoch"] for r in nfe], forward, "o-", ms=3)
    markers = dict(zip(dict.fromkeys(p.norm for p in norms), "s^Dv"))
    for name, marker in markers.items():
        mine = [p for p in norms if p.norm == name]
        ax_c.scatter([p.nfe_forward for p in mine], [p.nfe_backward for p in mine], marker=marker, s=40,
                     edgecolors="k", label=f"trained, tol {', '.join(f'{p.tol:.0e}' for p in mine)}: {name}")
    if nfe or norms:
        ax_c.legend(fontsize=7)
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


def claims(sweep: list[SweepPoint], nfe: list[dict], norms: list[NormPoint] = ()) -> list[list[str]]:
    """Figure 3's four panels as claims, with our numbers and verdicts."""
    rows = []
    if len(sweep) > 1:
        loose, tight = sweep[0], sweep[-1]
        rows.append(["(a) numerical error falls as forward NFE rises", f"NFE {loose.nfe} -> {tight.nfe}: error "
                     f"{loose.error:.1e} -> {tight.error:.1e}", "yes", verdict(tight.nfe > loose.nfe and tight.error < loose.error)])
        r = float(torch.corrcoef(torch.tensor([[p.nfe for p in sweep], [p.forward_ms for p in sweep]], dtype=torch.float64))[0, 1])
        rows.append(["(b) forward time proportional to forward NFE", f"correlation {r:.3f}", "linear", verdict(r > 0.9)])
    ratio = backward_forward_ratio(nfe)
    if ratio is not None:
        rows.append(["(c) backward NFE about half the forward NFE, over training", f"{ratio:.2f}", "about 0.5",
                     verdict(about_half(ratio))])
    if norms:
        ratios = [p.ratio for p in norms]
        tols = sorted({p.tol for p in norms}, reverse=True)
        rows.append([f"(c) the same on the trained model, each of {len({p.norm for p in norms})} adjoint norms at tol "
                     f"{tols[0]:.0e} to {tols[-1]:.0e}", f"{min(ratios):.2f}-{max(ratios):.2f}", "about 0.5",
                     verdict(any(about_half(r) for r in ratios))])
    if len({r["epoch"] for r in nfe}) > 1:
        first, last = nfe[0], nfe[-1]
        rows.append(["(d) forward NFE grows over training", f"{first['nfe_forward']:.1f} (epoch {first['epoch']}) -> "
                     f"{last['nfe_forward']:.1f} (epoch {last['epoch']})", "grows", verdict(last["nfe_forward"] > first["nfe_forward"])])
    return rows


def summary_markdown(sweep: list[SweepPoint], nfe: list[dict], scale: str, source: str,
                     norms: list[NormPoint] = ()) -> str:
    ratio = backward_forward_ratio(nfe)
    by_epoch: dict[int, float] = {}
    for r in nfe:
        by_epoch[r["epoch"]] = r["nfe_forward"]  # the last record of each epoch
    return "\n".join([
        f"# Figure 3: statistics of a trained ODE-Net (scale: {scale})",
        "",
        *claims_table(claims(sweep, nfe, norms)),
        f"From `{source}`. Tolerance sweep of the trained ODE block (float64, error against a "
        f"{REFERENCE_TOL:g} solve):",
        "",
        markdown_table(["tol", "NFE forward", "RMS error of h(1)", "forward time (ms)"],
                       [[f"{p.tol:.0e}", p.nfe, f"{p.error:.2e}", f"{p.forward_ms:.1f}"] for p in sweep]),
        f"Backward NFE / forward NFE over training: **{'-' if ratio is None else f'{ratio:.2f}'}** (paper: about 0.5). "
        "Forward NFE per training step by epoch: "
        + (", ".join(f"{e}: {v:.1f}" for e, v in sorted(by_epoch.items())) or "-") + ".",
        "",
        *([
            "Backward / forward NFE of one adjoint training step of the trained model, by the adjoint's error "
            "norm (the run's tolerances, the sweep's test images, float64):",
            "",
            markdown_table(["tol", "adjoint error norm", "NFE forward", "NFE backward", "backward / forward"],
                           [[f"{p.tol:.0e}", p.norm, p.nfe_forward, p.nfe_backward, f"{p.ratio:.2f}"] for p in norms]),
            "The backward solve integrates z backward beside a and a_theta, so any norm that counts z sees the "
            "forward's error again; leaving a_theta out (seminorm) or diluting it (global RMS) changes the "
            f"ratio by at most {norm_spread(norms):.2f} at any one tolerance here.",
            "",
        ] if norms else []),
    ])


def write_outputs(sweep: list[SweepPoint], nfe: list[dict], folder: Path, title: str, tensorboard: bool = True,
                  scale: str = "smoke", source: str = "-", norms: list[NormPoint] = ()) -> dict[str, Path]:
    folder = Path(folder)
    (folder / "fig3.md").write_text(summary_markdown(sweep, nfe, scale, source, norms))
    rows = [["a_b", p.tol, "", "", p.nfe, "", p.error, p.forward_ms, ""] for p in sweep]
    rows += [["c_d", "", r["epoch"], r["step"], r["nfe_forward"], r["nfe_backward"], "", "", ""] for r in nfe]
    rows += [["c_norm", p.tol, "", "", p.nfe_forward, p.nfe_backward, "", "", p.norm] for p in norms]
    write_csv(folder / "fig3.csv", ["panel", "tol", "epoch", "step", "nfe_forward", "nfe_backward", "error", "forward_ms",
                                    "adjoint_norm"], rows)
    png = save_figure(make_figure(sweep, nfe, title, norms), folder, "fig3", nfe[-1]["step"] if nfe else 0, tensorboard)
    return {"png": png, "csv": folder / "fig3.csv", "md": folder / "fig3.md"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode figure fig3", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=None,
                        help="an ODE-Net run folder or checkpoint (default: train or reuse the --scale run)")
    parser.add_argument("--images", type=int, default=None, help="test images in the tolerance sweep")
    add_figure_args(parser)
    args = parser.parse_args(argv)
    smoke_threads(args.scale)
    started = time.perf_counter()
    run = args.run
    if run is None:
        from neuralode.paper.table1 import run_specs

        spec = run_specs(args.scale, ["mnist_odenet"])[0]
        ensure_runs_or_exit([spec], args.scale, args.overrides, args.jobs)
        run = spec.run_dir
    settings = scale_settings("fig3", args.scale)
    if args.images is not None:
        settings["images"] = args.images
    try:
        ckpt, metrics = checkpoint_and_metrics(run)
        net, x, y, state = load_model_and_batch(ckpt, settings["images"])
    except (FileNotFoundError, NotAnODENetError) as error:
        raise SystemExit(f"error: {error}") from None
    sweep = tolerance_sweep(net, x, repeats=settings["repeats"])
    norms = adjoint_nfe_by_norm(net, x, y)
    nfe = training_nfe(read_metrics(metrics))
    title = f"Figure 3: statistics of a trained ODE-Net (scale {args.scale}: {progress(state)})"
    paths = write_outputs(sweep, nfe, out_dir(args.out), title, tensorboard=not args.no_tensorboard,
                          scale=args.scale, source=str(ckpt), norms=norms)
    for p in sweep:
        print(f"  tol {p.tol:.0e}: NFE {p.nfe:4d}  error {p.error:.2e}  forward {p.forward_ms:.1f} ms")
    ratio = backward_forward_ratio(nfe)
    print(f"backward/forward NFE over training: {'-' if ratio is None else f'{ratio:.2f}'} (paper: about 0.5)")
    for p in norms:
        print(f"  tol {p.tol:.0e}, adjoint norm {p.norm}: NFE {p.nfe_forward} forward, {p.nfe_backward} backward "
              f"({p.ratio:.2f})")
    print(f"wrote {paths['png']} and {paths['csv']} from {ckpt} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
