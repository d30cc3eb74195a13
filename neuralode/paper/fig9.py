"""Figure 9: data-space trajectories decoded while one dimension of z0 varies.

One panel per latent dimension d: starting from the average posterior mean of z0 over the test
spirals, z0[d] sweeps the range its posterior means cover (5th to 95th percentile), every
other dimension held; each z0 is integrated over the window and the extrapolation and decoded.
Colour is time, purple to red (as in the paper, where one dimension turns counter-clockwise
spirals into clockwise ones).

Output: ``fig9.png``, ``fig9.md`` (per dimension: the range swept and how strongly that
dimension of z0 follows the spiral's direction) and the figure in TensorBoard under
``<out>/tensorboard/fig9``.

    python -m neuralode figure fig9 --scale smoke      # trains (or reuses) the n = 30 latent ODE of Table 2
    python -m neuralode figure fig9 outputs/<run>      # any latent ODE spiral run (or checkpoint)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from neuralode.paper.common import markdown_table, out_dir, smoke_threads, write_figure
from neuralode.paper.runs import add_figure_args, ensure_spiral_runs, load_trained_or_exit, progress


@torch.no_grad()
def posterior_means(latent_task, batch: dict) -> torch.Tensor:
    """The posterior mean of z0 for every spiral of the batch: (B, L)."""
    mean, _ = latent_task.net.encoder(batch["values"], batch["times"], batch["mask"])
    return mean


def sweep_values(z0: torch.Tensor, steps: int) -> torch.Tensor:
    """Per dimension, ``steps`` values from the 5th to the 95th percentile of z0: (L, steps)."""
    low, high = torch.quantile(z0, torch.tensor([0.05, 0.95]), dim=0)
    fractions = torch.linspace(0.0, 1.0, steps)
    return low[:, None] + (high - low)[:, None] * fractions[None, :]


@torch.no_grad()
def decode_sweeps(latent_task, base: torch.Tensor, values: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Decoded trajectories (L, steps, T, D): z0 = base with dimension d set to ``values[d, k]``."""
    latent_dim, steps = values.shape
    z0 = base.expand(latent_dim, steps, latent_dim).clone()
    for d in range(latent_dim):
        z0[d, :, d] = values[d]
    net = latent_task.net
    flat = z0.reshape(latent_dim * steps, latent_dim)
    paths = net.latent_trajectories(flat, [times.expand(len(flat), -1)])[0]
    return net.decoder(paths).reshape(latent_dim, steps, len(times), -1)


def direction_correlation(z0: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Per dimension, the correlation of z0[d] with the direction (+1 / -1): (L,)."""
    z = z0 - z0.mean(0)
    s = direction.to(z0.dtype) - direction.to(z0.dtype).mean()
    return (z * s[:, None]).sum(0) / (z.norm(dim=0) * s.norm()).clamp_min(1e-12)


def make_figure(decoded: torch.Tensor, values: torch.Tensor, times: torch.Tensor, correlation: torch.Tensor, title: str):
    import matplotlib.pyplot as plt

    latent_dim, steps = values.shape
    fig, axes = plt.subplots(1, latent_dim, figsize=(3.4 * latent_dim, 3.8), squeeze=False)
    colors = plt.get_cmap("rainbow")(((times - times[0]) / (times[-1] - times[0])).numpy())
    for d, ax in enumerate(axes[0]):
        for k in range(steps):
            x = decoded[d, k]
            ax.plot(x[:, 0], x[:, 1], color="0.85", lw=0.6, zorder=1)
            ax.scatter(x[:, 0], x[:, 1], c=colors, s=2, zorder=2)
            ax.annotate(f"{values[d, k]:.1f}", (float(x[0, 0]), float(x[0, 1])), fontsize=6, color="0.3")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"vary z0[{d}] (corr. with direction {correlation[d]:+.2f})", fontsize=8)
    fig.suptitle(title + "; colour: time, purple to red; labels: the value of z0[d]", fontsize=9)
    fig.tight_layout()
    return fig


def summary_markdown(values: torch.Tensor, correlation: torch.Tensor, scale: str, source: str, n_spirals: int) -> str:
    rows = [[d, f"{values[d, 0]:.2f} .. {values[d, -1]:.2f}", f"{correlation[d]:+.2f}"] for d in range(len(values))]
    best = int(correlation.abs().argmax())
    return "\n".join([
        f"# Figure 9: varying one dimension of z0 (scale: {scale})",
        "",
        f"From `{source}`; z0 ranges and base point from the posterior means of {n_spirals} test spirals.",
        "",
        markdown_table(["dimension", "z0[d] swept", "correlation with direction"], rows),
        f"z0[{best}] follows the direction most closely (|corr| {abs(float(correlation[best])):.2f}); "
        "the paper's Figure 9 shows such a dimension turning counter-clockwise spirals into clockwise ones.",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode figure fig9", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=None,
                        help="a latent ODE spiral run folder or checkpoint (default: train or reuse Table 2's --n run at --scale)")
    parser.add_argument("--n", type=int, default=30, help="observed points of the run trained when none is given (default: 30)")
    parser.add_argument("--steps", type=int, default=7, help="values of each dimension (default: 7)")
    parser.add_argument("--spirals", type=int, default=200, help="test spirals giving the ranges (default: 200)")
    add_figure_args(parser)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    smoke_threads(args.scale)
    started = time.perf_counter()
    from neuralode.paper.fig8 import eval_batch

    run = args.run
    if run is None:
        run = ensure_spiral_runs(args.scale, [args.n], experiments=["latent_ode_spiral"], overrides=args.overrides,
                                 jobs=args.jobs)[("latent_ode_spiral", args.n, 0)]
    task, data, state = load_trained_or_exit(run)
    if type(task).__name__ != "LatentODETask":
        raise SystemExit(f"error: {run} trained a {type(task).__name__}, not a latent ODE on spirals")
    batch = eval_batch(data, args.spirals)
    z0 = posterior_means(task, batch)
    values = sweep_values(z0, args.steps)
    times = torch.cat([batch["interp_times"][0], batch["extrap_times"][0]])
    decoded = decode_sweeps(task, z0.mean(0), values, times)
    correlation = direction_correlation(z0, batch["direction"])
    title = f"Figure 9 (scale {args.scale}: {progress(state)})"
    fig = make_figure(decoded, values, times, correlation, title)
    text = summary_markdown(values, correlation, args.scale, str(run), len(z0))
    outputs = write_figure(fig, text, out_dir(args.out), "fig9", state["progress"]["step"], not args.no_tensorboard)
    print(text)
    print(f"wrote {outputs['png']} and {outputs['md']} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
