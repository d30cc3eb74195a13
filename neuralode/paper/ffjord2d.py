"""FFJORD on the 2-D toys: learned densities and the solver's function evaluations per solve.

One ``ffjord_toy2d`` run per toy (8 gaussians, pinwheel, checkerboard, swiss roll, moons,
circles, 2 spirals, rings): an MLP vector field trained by maximum likelihood with Hutchinson's
trace estimator, evaluated with the exact trace. Outputs, in ``outputs/paper/``:

- ``ffjord2d.png``: per toy, the data, the model's density and its samples;
- ``ffjord2d.md`` / ``ffjord2d.csv``: test NLL and NFE per solve (training forward, adjoint
  backward, evaluation); FFJORD reports about 70-100 NFE on these toys once trained;
- the figure in TensorBoard under ``<out>/tensorboard/ffjord2d``.

    python -m neuralode.paper.ffjord2d --scale smoke   # train (or reuse) the 8 runs, then draw

Runs live in ``outputs/paper/runs/<scale>/ffjord2d/<toy>/`` (reused when finished, resumed
when stopped; delete a folder to train it again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from neuralode.paper.common import claims_table, fmt, markdown_table, scale_settings, verdict
from neuralode.paper.runs import RunSpec, runs_root
from neuralode.paper.flows import (FlowRun, base_samples, draw_runs, flow_parser, grid_density,
                                   imshow_density, load_run, parse, require_runs, save_outputs, train_runs,
                                   scatter_points, write_tables)

TOYS = ("8gaussians", "pinwheel", "checkerboard", "swissroll", "moons", "circles", "2spirals", "rings")
#: FFJORD's NFE on the 2-D toys (forward, per solve, trained models).
PAPER_NFE = "70-100"



def collect(root: Path, toys: Sequence[str] = TOYS) -> dict[str, FlowRun | None]:
    return {toy: load_run(Path(root) / toy) for toy in toys}


def render(runs: dict[str, FlowRun | None], scale: str, root: Path | None = None) -> str:
    rows = []
    for toy, run in runs.items():
        if run is None:
            rows.append([toy, "no run", "-", "-", "-", "-", PAPER_NFE])
            continue
        rows.append([toy, fmt(run.final("test_nll"), ".3f"), run.steps, fmt(run.last_with("nfe_forward"), ".1f"),
                     fmt(run.last_with("nfe_backward"), ".1f"), fmt(run.final("test_nfe_forward"), ".0f"), PAPER_NFE])
    nfe = [run.final("test_nfe_forward") for run in runs.values() if run is not None]
    nfe = [value for value in nfe if value is not None]
    lines = [
        f"# FFJORD on 2-D toys (scale: {scale})",
        "",
        markdown_table(["toy", "test NLL (nats)", "iterations", "NFE train fwd", "NFE train bwd", "NFE eval",
                        "FFJORD NFE"], rows),
        *claims_table([["NFE per solve of the trained models", f"{min(nfe):.0f}-{max(nfe):.0f}", PAPER_NFE,
                        verdict(min(nfe) >= 70 and max(nfe) <= 100)]] if nfe else []),
        "NFE per solve: one solve per training step (forward: with Hutchinson's estimate; backward: the "
        "adjoint solve; both averaged over the last epoch) and per evaluation batch (exact trace). "
        "FFJORD reports about 70-100 on these toys after its 10,000 iterations; NFE changes as the field "
        "trains, up on some toys and down on others, so runs of another length differ.",
    ]
    if root is not None:
        lines += ["", f"Runs: `{root}/<toy>`."]
    return "\n".join(lines) + "\n"


CSV_HEADERS = ["toy", "test_nll", "steps", "nfe_forward", "nfe_backward", "test_nfe_forward", "paper_nfe", "elapsed_s",
               "device", "run"]


def csv_rows(runs: dict[str, FlowRun | None]) -> list[list]:
    rows = []
    for toy, run in runs.items():
        if run is None:
            rows.append([toy, "", "", "", "", "", PAPER_NFE, "", "", ""])
            continue
        rows.append([toy, run.final("test_nll"), run.steps, run.last_with("nfe_forward"), run.last_with("nfe_backward"),
                     run.final("test_nfe_forward"), PAPER_NFE, run.summary.get("elapsed_s"), run.summary.get("device"),
                     str(run.path)])
    return rows


@torch.no_grad()
def draw_model(flow: torch.nn.Module, half_width: float, grid: int, samples: int, seed: int = 0):
    """The model's density on a grid x grid grid and ``samples`` of its samples (numpy)."""
    return grid_density(flow, half_width, grid), flow.sample_with_log_prob(base_samples(samples, seed))[0].numpy()


def make_figure(drawn: dict, data: dict[str, np.ndarray], runs: dict[str, FlowRun | None], half_width: float, title: str):
    """Columns: the toys; rows: data, model density, model samples."""
    import matplotlib.pyplot as plt

    toys = list(data)
    fig, axes = plt.subplots(3, len(toys), figsize=(1.8 * len(toys) + 0.8, 6.2), layout="constrained", squeeze=False)
    for c, toy in enumerate(toys):
        density, samples = drawn.get(toy, (None, None))
        run = runs.get(toy)
        nfe = run.final("test_nfe_forward") if run is not None else None
        scatter_points(axes[0, c], data[toy], half_width, toy)
        imshow_density(axes[1, c], density, half_width, "" if nfe is None else f"NFE {nfe:.0f}")
        scatter_points(axes[2, c], samples, half_width)
    for r, label in enumerate(("data", "model density", "model samples")):
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.suptitle(title)
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = flow_parser("python -m neuralode.paper.ffjord2d", "ffjord2d", __doc__)
    parser.add_argument("--toys", nargs="+", default=None, choices=TOYS,
                        help="the toys to train and draw (default: the scale's, configs/paper_scales.yaml)")
    args, started = parse(parser, argv)
    draw = scale_settings("ffjord2d", args.scale)
    args.toys = args.toys or draw["toys"]
    root = args.runs or runs_root(args.scale) / "ffjord2d"
    specs = [RunSpec("ffjord_toy2d", root / toy, (f"data.name={toy}",)) for toy in args.toys]
    failed = [] if args.no_train else train_runs(specs, args)
    runs = require_runs(collect(root, args.toys), root, "FFJORD")
    folder = write_tables(args.out, "ffjord2d", render(runs, args.scale, root), CSV_HEADERS, csv_rows(runs))

    from neuralode.data.toy2d import sample_toy

    drawn, half_width = draw_runs(
        runs, lambda flow, half_width: draw_model(flow, half_width, draw["grid"], draw["samples"]))
    data = {toy: sample_toy(toy, draw["samples"], seed=1).numpy() for toy in args.toys}
    fig = make_figure(drawn, data, runs, half_width, f"FFJORD on 2-D toys (scale {args.scale})")
    save_outputs(fig, folder, "ffjord2d", not args.no_tensorboard, started, runs, failed)


if __name__ == "__main__":
    main()
