"""Figure 8: spirals, RNN against latent ODE, and the latent trajectories.

(a) the RNN baseline (the change-from-last-value RNN, the better of Table 2's two) on a few
    test spirals: its predictions on the observed window (each from the observations before it)
    and its autoregressive extrapolation;
(b) the latent ODE on the same spirals: reconstruction on the window and extrapolation, decoded
    from the posterior mean of z0;
(c) the latent trajectories z(t) of many test spirals projected on their first two dimensions,
    coloured by the spiral's direction (the paper: the model separates the two directions).

Output: ``fig8.png``, ``fig8.md`` (test RMSE of both models recomputed here, and how well a
linear classifier on z0 tells the directions apart), and the figure in TensorBoard under
``<out>/tensorboard/fig8``.

    python -m neuralode figure fig8 --scale smoke                    # trains (or reuses) the n = 30 runs of Table 2
    python -m neuralode figure fig8 --latent <run> --rnn <run>       # any two spiral runs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from neuralode.paper.common import markdown_table, out_dir, smoke_threads, write_figure
from neuralode.paper.runs import add_figure_args, ensure_spiral_runs, load_trained_or_exit, progress

#: The RNN drawn when none is given: the paper's baseline with the time gap as an input.
RNN_BASELINE = "rnn_spiral"

COLORS = {"truth": "0.6", "observed": "k", "window": "tab:blue", "extrapolation": "tab:red",
          "counter-clockwise": "tab:blue", "clockwise": "tab:red"}


def eval_batch(data, size: int) -> dict[str, torch.Tensor]:
    """The first ``size`` evaluation spirals as one batch."""
    dataset = data.eval_dataset()
    return {name: t[:size] for name, t in dataset.tensors.items()}


@torch.no_grad()
def predictions(latent_task, rnn_task, batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each model's (window, extrapolation) predictions on the batch; the latent ODE's from one draw
    of z0 from the posterior (seeded), as the paper's Figure 8 decodes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        latent = latent_task.predict(batch, sample=True)
    return {"RNN": rnn_task.predict(batch), "latent ODE": latent}


@torch.no_grad()
def latent_paths(latent_task, batch: dict) -> torch.Tensor:
    """z(t) from the posterior mean of z0 on the window and the extrapolation: (B, P + E, L)."""
    net = latent_task.net
    mean, _ = net.encoder(batch["values"], batch["times"], batch["mask"])
    times = torch.cat([batch["interp_times"], batch["extrap_times"]], dim=1)
    return net.latent_trajectories(mean, [times])[0]


def direction_accuracy(z0: torch.Tensor, direction: torch.Tensor) -> float:
    """Training accuracy of a least-squares linear classifier of the direction from z0: 1.0 when
    a hyperplane separates the clockwise spirals from the others."""
    features = torch.cat([z0, torch.ones(len(z0), 1)], dim=1).double()
    weights = torch.linalg.lstsq(features, direction.double()[:, None]).solution
    return float(((features @ weights)[:, 0].sign() == direction.sign()).double().mean())


def pick_series(direction: torch.Tensor, count: int) -> list[int]:
    """``count`` series alternating counter-clockwise and clockwise (as available)."""
    ccw = (direction > 0).nonzero()[:, 0].tolist()
    cw = (direction < 0).nonzero()[:, 0].tolist()
    picked = []
    while len(picked) < count and (ccw or cw):
        for pool in (ccw, cw):
            if pool and len(picked) < count:
                picked.append(pool.pop(0))
    return picked


def make_figure(batch: dict, preds: dict, paths: torch.Tensor, series: list[int], title: str):
    import matplotlib.pyplot as plt

    n = len(series)
    fig = plt.figure(figsize=(3.0 * n + 4.5, 6.2))
    grid = fig.add_gridspec(2, n + 2)
    for row, model in enumerate(("RNN", "latent ODE")):
        window, extrap = preds[model]
        for col, i in enumerate(series):
            ax = fig.add_subplot(grid[row, col])
            truth = torch.cat([batch["interp_values"][i], batch["extrap_values"][i]])
            obs = batch["values"][i][batch["mask"][i]]
            ax.plot(truth[:, 0], truth[:, 1], color=COLORS["truth"], lw=1, label="ground truth")
            ax.scatter(obs[:, 0], obs[:, 1], s=7, color=COLORS["observed"], zorder=3, label="observation")
            ax.plot(window[i, :, 0], window[i, :, 1], color=COLORS["window"], lw=1.5, label="prediction")
            ax.plot(extrap[i, :, 0], extrap[i, :, 1], color=COLORS["extrapolation"], lw=1.5, label="extrapolation")
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"({'ab'[row]}) {model}")
            if row == 0 and col == 0:
                ax.legend(fontsize=6, loc="best")
    ax = fig.add_subplot(grid[:, n:])
    for i in range(len(paths)):
        kind = "counter-clockwise" if batch["direction"][i] > 0 else "clockwise"
        ax.plot(paths[i, :, 0], paths[i, :, 1], color=COLORS[kind], lw=0.8, alpha=0.6)
        ax.plot(paths[i, :1, 0], paths[i, :1, 1], "o", color=COLORS[kind], ms=2)
    for kind in ("counter-clockwise", "clockwise"):
        ax.plot([], [], color=COLORS[kind], label=kind)
    ax.legend(fontsize=7, loc="best")
    ax.set(xlabel="z1", ylabel="z2", title="(c) latent trajectories (dots: z0)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    from neuralode.tasks.latent import rmse_per_series

    return float(rmse_per_series(pred, target).mean())


def summary_markdown(batch: dict, preds: dict, z0: torch.Tensor, scale: str, sources: dict[str, str]) -> str:
    rows = [[model, f"{rmse(window, batch['interp_values']):.4f}", f"{rmse(extrap, batch['extrap_values']):.4f}"]
            for model, (window, extrap) in preds.items()]
    accuracy = direction_accuracy(z0, batch["direction"])
    return "\n".join([
        f"# Figure 8: spirals, RNN against latent ODE (scale: {scale})",
        "",
        f"{len(batch['times'])} test spirals, {batch['times'].shape[1]} observed points each. "
        f"Runs: RNN `{sources['RNN']}`, latent ODE `{sources['latent ODE']}`.",
        "",
        markdown_table(["model", "RMSE window", "RMSE extrapolation"], rows),
        f"Panel (c): a linear classifier on the posterior mean of z0 tells the direction of "
        f"**{100 * accuracy:.0f}%** of these spirals (the paper: the latent dynamics separate the two directions).",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode figure fig8", description=__doc__.split("\n\n")[0])
    parser.add_argument("--latent", type=Path, default=None, help="a latent ODE spiral run folder or checkpoint")
    parser.add_argument("--rnn", type=Path, default=None, help="an RNN spiral run folder or checkpoint")
    parser.add_argument("--n", type=int, default=30, help="observed points of the runs trained when none is given (default: 30)")
    parser.add_argument("--series", type=int, default=3, help="spirals drawn in (a) and (b) (default: 3)")
    parser.add_argument("--latent-series", type=int, default=100, help="spirals drawn in (c) (default: 100)")
    add_figure_args(parser, trained="the runs")
    args = parser.parse_args(argv)
    smoke_threads(args.scale)
    started = time.perf_counter()

    if args.latent is None or args.rnn is None:
        trained = ensure_spiral_runs(args.scale, [args.n], experiments=[RNN_BASELINE, "latent_ode_spiral"],
                                     overrides=args.overrides, jobs=args.jobs)
        args.latent = args.latent or trained[("latent_ode_spiral", args.n, 0)]
        args.rnn = args.rnn or trained[(RNN_BASELINE, args.n, 0)]
    latent_task, data, state = load_trained_or_exit(args.latent)
    rnn_task, _, rnn_state = load_trained_or_exit(args.rnn)
    if type(latent_task).__name__ != "LatentODETask" or type(rnn_task).__name__ != "RNNTask":
        raise SystemExit(f"error: --latent must be a latent ODE spiral run and --rnn an RNN spiral run; got "
                         f"{type(latent_task).__name__} and {type(rnn_task).__name__}")
    # Both models see the same spirals: the latent run's test set.
    if rnn_state["config"].get("data") != state["config"].get("data"):
        print("warning: the two runs were trained on different data settings; both are shown the latent run's test spirals")
    batch = eval_batch(data, max(args.latent_series, args.series))
    preds = predictions(latent_task, rnn_task, batch)
    paths = latent_paths(latent_task, batch)
    series = pick_series(batch["direction"], args.series)
    title = (f"Figure 8: spirals with {batch['times'].shape[1]} observed points (scale {args.scale}: "
             f"latent ODE {progress(state)})")
    fig = make_figure(batch, preds, paths, series, title)
    z0 = paths[:, 0]
    text = summary_markdown(batch, preds, z0, args.scale, {"RNN": str(args.rnn), "latent ODE": str(args.latent)})
    outputs = write_figure(fig, text, out_dir(args.out), "fig8", state["progress"]["step"], not args.no_tensorboard)
    print(text)
    print(f"wrote {outputs['png']} and {outputs['md']} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
