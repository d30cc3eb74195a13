"""Figure 5: from noise to data, planar CNF (64 units) against planar NF (64 one-unit layers).

Both flows are fitted by maximum likelihood to samples of Two Circles and Two Moons (the
experiments ``cnf_toy2d`` and ``nf_toy2d`` with ``data.name=two_circles`` or ``two_moons``).
The figure shows, for each data set, the density and the samples of each flow after 5, 20,
40, 60, 80 and 100% of the flow (for the CNF: at that fraction of its integration time; for
the NF: after that fraction of its layers), beside the data. Outputs, in ``outputs/paper/``:
``fig5.png``, ``fig5.md`` / ``fig5.csv`` (test NLL and NFE of the four runs), and the figure
in TensorBoard under ``<out>/tensorboard/fig5``.

    python -m neuralode.paper.fig5 --scale smoke      # train (or reuse) the four runs, then draw

Runs live in ``outputs/paper/runs/<scale>/fig5/<flow>_<data set>/`` (reused when finished, resumed
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

DATASETS = {"two_circles": "Two Circles", "two_moons": "Two Moons"}
FLOWS = ("CNF", "NF")
#: The costliest first, so that two cores finish together (cpu scale, one core each, measured at
#: c2083f6: CNF on Two Circles 550 s, NF on Two Moons 508 s, NF on Two Circles 550 s, CNF on Two
#: Moons 460 s; the two cores finished within 48 s of each other).
TRAINING_ORDER = (("CNF", "two_circles"), ("NF", "two_moons"), ("NF", "two_circles"), ("CNF", "two_moons"))
FRACTIONS = (0.05, 0.2, 0.4, 0.6, 0.8, 1.0)



def run_name(flow: str, dataset: str) -> str:
    """The run's folder: ``cnf_two_moons``, ..."""
    return f"{flow.lower()}_{dataset}"


def run_specs(root: Path, scale: str) -> list[RunSpec]:
    """The four runs, costliest first, each with the scale's own overrides (configs/paper_scales.yaml
    ``fig5.runs``: the cpu scale trains Two Circles' CNF for fewer iterations)."""
    extra = scale_settings("fig5", scale).get("runs", {})
    return [RunSpec(f"{flow.lower()}_toy2d", root / run_name(flow, dataset),
                    (f"data.name={dataset}", *extra.get(run_name(flow, dataset), ())))
            for flow, dataset in TRAINING_ORDER]


def collect(root: Path) -> dict[tuple[str, str], FlowRun | None]:
    """Every (flow, data set) of the figure and its finished run, or None."""
    return {(flow, dataset): load_run(Path(root) / run_name(flow, dataset)) for dataset in DATASETS for flow in FLOWS}


@torch.no_grad()
def along_the_flow(flow: torch.nn.Module, half_width: float, grid: int, samples: int, fractions: Sequence[float],
                   seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The flow's density (grid x grid) and the positions of ``samples`` base points after each
    fraction of the flow. Under ``no_grad``: a CNF still differentiates its field for the trace."""
    densities = [grid_density(flow, half_width, grid, f) for f in fractions]
    points = [p.detach().numpy() for p in flow.sample_path(base_samples(samples, seed), list(fractions))]
    return densities, points


def make_figure(drawn: dict, data: dict[str, np.ndarray], fractions: Sequence[float], half_width: float, title: str):
    """Rows: per data set, CNF density, CNF samples, NF density, NF samples; columns: the
    fractions of the flow, then the data. ``drawn[(flow, dataset)]`` is (densities, points) or None."""
    import matplotlib.pyplot as plt

    rows = [(dataset, flow, kind) for dataset in data for flow in FLOWS for kind in ("density", "samples")]
    columns = len(fractions) + 1
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns + 1.2, 1.6 * len(rows) + 0.6),
                             layout="constrained", squeeze=False)
    for r, (dataset, flow, kind) in enumerate(rows):
        result = drawn.get((flow, dataset))
        for c, fraction in enumerate(fractions):
            ax, top = axes[r, c], f"{100 * fraction:.0f}%" if r == 0 else ""
            if kind == "density":
                imshow_density(ax, None if result is None else result[0][c], half_width, top)
            else:
                scatter_points(ax, None if result is None else result[1][c], half_width, top)
        axes[r, 0].set_ylabel(f"{DATASETS[dataset]}\n{flow} {kind}", fontsize=9)
        if kind == "density":
            hist, _, _ = np.histogram2d(data[dataset][:, 1], data[dataset][:, 0], bins=50,
                                        range=[[-half_width, half_width]] * 2, density=True)
            imshow_density(axes[r, -1], hist, half_width, "data" if r == 0 else "")
        else:
            scatter_points(axes[r, -1], data[dataset], half_width)
    fig.suptitle(title)
    return fig


def render(runs: dict[tuple[str, str], FlowRun | None], scale: str, root: Path | None = None) -> str:
    rows = []
    for (flow, dataset), run in runs.items():
        if run is None:
            rows.append([DATASETS[dataset], flow, "no run", "-", "-", "-"])
            continue
        forward, backward = fmt(run.last_with("nfe_forward"), ".1f"), fmt(run.last_with("nfe_backward"), ".1f")
        nfe = "-" if flow == "NF" else f"{forward} / {backward}"
        rows.append([DATASETS[dataset], flow, fmt(run.final("test_nll"), ".3f"), run.steps,
                     run.summary.get("num_parameters"), nfe])
    claims = []
    for dataset, name in DATASETS.items():
        cnf, nf = runs.get(("CNF", dataset)), runs.get(("NF", dataset))
        if cnf is not None and nf is not None and None not in (cnf.final("test_nll"), nf.final("test_nll")):
            claims.append([f"{name}: the CNF fits better than the NF (test NLL)",
                           f"{cnf.final('test_nll'):.3f} vs {nf.final('test_nll'):.3f}", "CNF better (pictures)",
                           verdict(cnf.final("test_nll") < nf.final("test_nll"))])
    lines = [
        f"# Figure 5: noise to data, planar CNF against planar NF (scale: {scale})",
        "",
        markdown_table(["data", "flow", "test NLL (nats)", "iterations", "parameters", "NFE fwd / bwd per step"], rows),
        *claims_table(claims),
        "Test NLL: -log q(x) per point on held-out samples (exact trace for the CNF). The paper gives no "
        "numbers for this figure, only the pictures: the CNF spreads its mass into both shapes, the NF "
        "has difficulty with Two Moons.",
    ]
    if root is not None:
        lines += ["", f"Runs: `{root}/<experiment>`."]
    return "\n".join(lines) + "\n"


CSV_HEADERS = ["dataset", "flow", "test_nll", "steps", "num_parameters", "nfe_forward", "nfe_backward", "elapsed_s",
               "device", "run"]


def csv_rows(runs: dict[tuple[str, str], FlowRun | None]) -> list[list]:
    rows = []
    for (flow, dataset), run in runs.items():
        if run is None:
            rows.append([dataset, flow] + [""] * 8)
            continue
        rows.append([dataset, flow, run.final("test_nll"), run.steps, run.summary.get("num_parameters"),
                     run.last_with("nfe_forward"), run.last_with("nfe_backward"), run.summary.get("elapsed_s"),
                     run.summary.get("device"), str(run.path)])
    return rows


def main(argv: list[str] | None = None) -> None:
    args, started = parse(flow_parser("python -m neuralode figure fig5", "fig5", __doc__), argv)
    root = args.runs or runs_root(args.scale) / "fig5"
    failed = [] if args.no_train else train_runs(run_specs(root, args.scale), args)
    runs = require_runs(collect(root), root, "Figure 5")
    folder = write_tables(args.out, "fig5", render(runs, args.scale, root), CSV_HEADERS, csv_rows(runs))

    from neuralode.data.toy2d import sample_toy

    draw = scale_settings("fig5", args.scale)
    drawn, half_width = draw_runs(
        runs, lambda flow, half_width: along_the_flow(flow, half_width, draw["grid"], draw["samples"], FRACTIONS))
    data = {dataset: sample_toy(dataset, draw["samples"], seed=1).numpy() for dataset in DATASETS}
    fig = make_figure(drawn, data, FRACTIONS, half_width,
                      f"Figure 5: noise to data, CNF (64 units) vs NF (64 layers) (scale {args.scale})")
    save_outputs(fig, folder, "fig5", not args.no_tensorboard, started, runs, failed)


if __name__ == "__main__":
    main()
