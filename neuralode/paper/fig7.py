"""Figure 7: a latent ODE with a Poisson process likelihood, fitted to toy event sequences.

Each panel is one test sequence: its events (ticks), the true rate that generated them and the
intensity lambda(z(t)) the model infers from the events (decoded from the posterior mean of
z0). The training run is ``configs/experiment/latent_ode_poisson.yaml``.

Output: ``fig7.png``, ``fig7.md`` (on the test sequences: the model's ELBO against the
log-likelihood of the best constant rate, and the RMSE of the learned rate against the true one,
beside that constant rate's) and the figure in TensorBoard under ``<out>/tensorboard/fig7``.

    python -m neuralode figure fig7 --scale smoke     # trains (or reuses) the run
    python -m neuralode figure fig7 outputs/<run>     # any Poisson latent ODE run (or checkpoint)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from neuralode.paper.common import claims_table, verdict, markdown_table, out_dir, smoke_threads, write_figure
from neuralode.paper.runs import (RunSpec, add_figure_args, ensure_runs_or_exit, load_trained_or_exit, progress,
                                  runs_root)

EXPERIMENT = "latent_ode_poisson"


def eval_batch(data) -> dict[str, torch.Tensor]:
    """Every evaluation sequence as one batch."""
    return dict(data.eval_dataset().tensors)


def constant_rate_baseline(batch: dict) -> dict[str, torch.Tensor]:
    """Per sequence, the best constant rate (events / window) and its Poisson log-likelihood."""
    count = batch["mask"].sum(1).to(batch["t_end"].dtype)
    rate = count / batch["t_end"]
    log_likelihood = torch.where(count > 0, count * torch.log(rate.clamp_min(1e-12)), torch.zeros_like(count)) - count
    return {"rate": rate, "log_likelihood": log_likelihood}


@torch.no_grad()
def evaluate(task, batch: dict) -> dict[str, float]:
    """Test ELBO and rate RMSE of the model beside the constant-rate baseline's."""
    out = task.net(batch["times"], batch["mask"], batch["t_end"], [batch["grid_times"]], sample=False)
    rates = out.rates[0]
    baseline = constant_rate_baseline(batch)
    true = batch["true_rate"]
    return {
        "elbo": float(task.net.elbo(out).mean()),
        "log_likelihood": float(out.log_likelihood.mean()),
        "rate_rmse": float((rates - true).pow(2).mean(1).sqrt().mean()),
        "baseline_log_likelihood": float(baseline["log_likelihood"].mean()),
        "baseline_rate_rmse": float((baseline["rate"][:, None] - true).pow(2).mean(1).sqrt().mean()),
        "events": float(batch["mask"].sum(1).float().mean()),
        "sequences": len(true),
    }


def make_figure(batch: dict, rates: torch.Tensor, series: list[int], title: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(7, 1.7 * len(series) + 0.6), sharex=True, squeeze=False)
    for ax, i in zip(axes[:, 0], series):
        grid = batch["grid_times"][i]
        ax.plot(grid, batch["true_rate"][i], color="0.6", lw=1.2, label="true rate")
        ax.plot(grid, rates[i], color="tab:blue", lw=1.5, label="learned intensity λ(z(t))")
        events = batch["times"][i][batch["mask"][i]]
        ax.plot(events, torch.zeros_like(events), "o", color="k", ms=3, label="events")
        ax.set_ylabel("rate")
        ax.set_ylim(bottom=-0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1, 0].set_xlabel("time")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def summary_markdown(numbers: dict[str, float], scale: str, source: str) -> str:
    rows = [
        ["latent ODE (ELBO)", f"{numbers['elbo']:.2f}", f"{numbers['rate_rmse']:.3f}"],
        ["best constant rate per sequence", f"{numbers['baseline_log_likelihood']:.2f}", f"{numbers['baseline_rate_rmse']:.3f}"],
    ]
    return "\n".join([
        f"# Figure 7: latent ODE with a Poisson process likelihood (scale: {scale})",
        "",
        f"From `{source}`. {numbers['sequences']} test sequences, {numbers['events']:.1f} events each on average.",
        "",
        markdown_table(["model", "log-likelihood per sequence", "RMSE of the rate"], rows),
        *claims_table([["the latent ODE's intensity follows the events' rate better than a constant rate",
                        f"rate RMSE {numbers['rate_rmse']:.3f} vs {numbers['baseline_rate_rmse']:.3f}",
                        "shown in a figure, no numbers", verdict(numbers["rate_rmse"] < numbers["baseline_rate_rmse"])]]),
        "The ELBO bounds the model's log-likelihood from below. The constant rate is fitted to each test "
        "sequence itself (events / window); the latent ODE infers the rate from the events through its encoder. "
        "The paper shows this figure without numbers.",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode figure fig7", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=None,
                        help="a Poisson latent ODE run folder or checkpoint (default: train or reuse the --scale run)")
    parser.add_argument("--series", type=int, default=4, help="sequences drawn (default: 4)")
    add_figure_args(parser)
    args = parser.parse_args(argv)
    smoke_threads(args.scale)
    started = time.perf_counter()
    run = args.run
    if run is None:
        spec = RunSpec(EXPERIMENT, runs_root(args.scale) / EXPERIMENT)
        ensure_runs_or_exit([spec], args.scale, args.overrides, args.jobs)
        run = spec.run_dir
    task, data, state = load_trained_or_exit(run)
    if type(task).__name__ != "PoissonTask":
        raise SystemExit(f"error: {run} trained a {type(task).__name__}, not a Poisson process latent ODE")
    batch = eval_batch(data)
    numbers = evaluate(task, batch)
    with torch.no_grad():
        rates = task.rates(batch)
    series = list(range(min(args.series, len(rates))))
    title = f"Figure 7: events and learned intensity (scale {args.scale}: {progress(state)})"
    fig = make_figure(batch, rates, series, title)
    text = summary_markdown(numbers, args.scale, str(run))
    outputs = write_figure(fig, text, out_dir(args.out), "fig7", state["progress"]["step"], not args.no_tensorboard)
    print(text)
    print(f"wrote {outputs['png']} and {outputs['md']} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
