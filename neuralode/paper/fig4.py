"""Figure 4: density matching, planar normalizing flow (K layers) against planar CNF (M units).

For each of three target energies (Rezende & Mohamed's U1, U2, U3) and each K = M in
{2, 8, 32}, an ``nf_density_matching`` and a ``cnf_density_matching`` run minimise
KL(q || p). Outputs, in ``outputs/paper/`` (or ``--out``):

- ``fig4.png``: the target and the learned densities (rows: energies; columns: target,
  NF K = 2, 8, 32, CNF M = 2, 8, 32) and the final KL against K = M;
- ``fig4.md`` / ``fig4.csv``: the numbers, and whether the CNF's KL is below the NF's at each
  K = M (the paper: it is, everywhere);
- the figure in TensorBoard under ``<out>/tensorboard/fig4`` (each run logs its own densities
  and samples in its folder too).

    python -m neuralode.paper.fig4 --scale smoke      # train (or reuse) the 18 runs, then draw
    python -m neuralode figure fig4 --scale paper     # the paper's recipe (GPU)

Runs live in ``outputs/paper/runs/<scale>/fig4/<experiment>_<energy>_<size>/``: a finished
run (``summary.json``) is reused, a stopped one (``last.pt``) resumed; delete a folder to
train it again. The run, panel and command-line helpers it shares with fig5 and ffjord2d
are in ``flows.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from neuralode.paper.common import claims_table, markdown_table, scale_settings, verdict
from neuralode.paper.runs import RunSpec, runs_root
from neuralode.paper.flows import (FlowRun, draw_runs, flow_parser, grid_density, imshow_density, load_run,
                                   parse, require_runs, save_outputs, train_runs, write_tables)

ENERGIES = ("u1", "u2", "u3")
SIZES = (2, 8, 32)
#: Each flow of the figure: its experiment, the config key of its size (K layers, M units),
#: and the letter the paper gives that size.
FLOWS = {
    "NF": ("nf_density_matching", "model.flow.layers", "K"),
    "CNF": ("cnf_density_matching", "model.flow.field.units", "M"),
}

#: The figure shows [-4, 4]^2, the square the paper draws the targets in.
HALF_WIDTH = 4.0

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- Figure 4's runs and numbers
def run_dir(root: Path, flow: str, energy: str, size: int) -> Path:
    return Path(root) / f"{FLOWS[flow][0]}_{energy}_{size}"


def run_specs(root: Path, energies: Sequence[str] = ENERGIES, sizes: Sequence[int] = SIZES) -> list[RunSpec]:
    """Figure 4's runs: both flows at every (energy, size), the CNF before the NF and the largest
    size first. The costliest runs start first, so two or more runs at once finish together
    rather than one long run finishing alone, and a stopped session leaves whole pairs behind."""
    return [RunSpec(FLOWS[flow][0], run_dir(root, flow, energy, size), (f"data.energy={energy}", f"{FLOWS[flow][1]}={size}"))
            for size in sorted(sizes, reverse=True) for energy in energies for flow in ("CNF", "NF")]


def collect(root: Path, energies: Sequence[str] = ENERGIES, sizes: Sequence[int] = SIZES) -> dict[tuple, FlowRun | None]:
    """Every (flow, energy, size) of the figure and its finished run, or None."""
    return {(flow, energy, size): load_run(run_dir(root, flow, energy, size))
            for flow in FLOWS for energy in energies for size in sizes}


def final_kl(run: FlowRun | None) -> float | None:
    return None if run is None else run.final("test_kl")


def cnf_lower(nf: float | None, cnf: float | None) -> str:
    return "-" if nf is None or cnf is None else verdict(cnf < nf)


def table_rows(runs: dict[tuple, FlowRun | None], energies: Sequence[str], sizes: Sequence[int]) -> list[list[str]]:
    rows = []
    for energy in energies:
        for size in sizes:
            nf, cnf = runs[("NF", energy, size)], runs[("CNF", energy, size)]
            rows.append([energy.upper(), size, _kl_cell(nf), _kl_cell(cnf), cnf_lower(final_kl(nf), final_kl(cnf))])
    return rows


def _kl_cell(run: FlowRun | None) -> str:
    kl = final_kl(run)
    return "no run" if kl is None else f"{kl:.3f} ({run.steps} it)"


def render(runs: dict[tuple, FlowRun | None], scale: str, energies: Sequence[str] = ENERGIES,
           sizes: Sequence[int] = SIZES, root: Path | None = None) -> str:
    """fig4.md: the KL table, the count of K = M where the CNF is lower, what the numbers are."""
    rows = table_rows(runs, energies, sizes)
    decided = [row[-1] for row in rows if row[-1] != "-"]
    cnf_runs = [run for (flow, _, _), run in runs.items() if flow == "CNF" and run is not None]
    nfe = [(run.last_with("nfe_forward"), run.last_with("nfe_backward")) for run in cnf_runs]
    nfe = [(f, b) for f, b in nfe if f is not None and b is not None]
    lines = [
        f"# Figure 4: density matching, planar NF against planar CNF (scale: {scale})",
        "",
        markdown_table(["target", "K = M", "NF KL(q||p)", "CNF KL(q||p)", "CNF lower? (paper: yes)"], rows),
        f"CNF below NF at **{decided.count('yes')} of {len(decided)}** (target, K = M) pairs "
        "(the paper: at every one).",
        "",
        *claims_table([["CNF KL(q||p) below the NF's at every (target, K = M)",
                        f"{decided.count('yes')} of {len(decided)} measured pairs", f"{len(rows)} of {len(rows)}",
                        (verdict(decided.count("yes") == len(rows)) if len(decided) == len(rows) or "no" in decided
                         else f"open: all {len(decided)} measured hold, {len(rows) - len(decided)} not run")]]
                      if decided else []),
        "KL(q||p) in nats, estimated on the evaluation's fixed base samples after the last iteration "
        "(log Z of each target by quadrature, so 0 means q = p); `it`: training iterations. The paper "
        "trained the CNF with Adam for 10,000 iterations and the NF with RMSprop for 500,000.",
    ]
    if nfe:
        forward, backward = (sum(values) / len(nfe) for values in zip(*nfe))
        lines += ["", f"CNF function evaluations per training step (last epoch, mean over runs): "
                      f"forward {forward:.1f}, adjoint backward {backward:.1f}."]
    if root is not None:
        lines += ["", f"Runs: `{root}/<experiment>_<target>_<K or M>`."]
    return "\n".join(lines) + "\n"


#: One row per (target, K = M): the two KLs first, then how each run got there.
CSV_HEADERS = ["energy", "k", "nf_kl", "cnf_kl", "nf_steps", "cnf_steps", "cnf_nfe_forward", "cnf_nfe_backward",
               "nf_elapsed_s", "cnf_elapsed_s", "nf_peak_rss_mb", "cnf_peak_rss_mb", "device"]


def csv_rows(runs: dict[tuple, FlowRun | None]) -> list[list]:
    def value(run: FlowRun | None, get) -> Any:
        return "" if run is None or get(run) is None else get(run)

    rows = []
    for energy, size in dict.fromkeys((energy, size) for _, energy, size in runs):
        nf, cnf = runs.get(("NF", energy, size)), runs.get(("CNF", energy, size))
        device = {run.summary.get("device") for run in (nf, cnf) if run is not None}
        rows.append([energy, size, value(nf, final_kl), value(cnf, final_kl), value(nf, lambda r: r.steps),
                     value(cnf, lambda r: r.steps), value(cnf, lambda r: r.last_with("nfe_forward")),
                     value(cnf, lambda r: r.last_with("nfe_backward")), value(nf, lambda r: r.summary.get("elapsed_s")),
                     value(cnf, lambda r: r.summary.get("elapsed_s")), value(nf, lambda r: r.last_with("peak_rss_mb")),
                     value(cnf, lambda r: r.last_with("peak_rss_mb")), ", ".join(sorted(map(str, device)))])
    return rows


# --------------------------------------------------------------------------- the figure
def model_densities(runs: dict[tuple, FlowRun | None], half_width: float, grid: int) -> dict[tuple, np.ndarray | None]:
    """q of every finished run's final model on a ``grid`` x ``grid`` grid (None where no run)."""
    drawn, _ = draw_runs(runs, lambda flow, _: grid_density(flow, half_width, grid))
    return {key: drawn.get(key) for key in runs}


def target_density(energy: str, half_width: float, grid: int) -> np.ndarray:
    """p = exp(-U) / Z of a target on the same grid (rows = y)."""
    from neuralode.data.energies import log_normalizer, target_energy

    U = target_energy(energy)
    axis = torch.linspace(-half_width, half_width, grid, dtype=torch.float64)
    points = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)
    return torch.exp(-U(points) - log_normalizer(U)).numpy()


def make_figure(model: dict, target: dict, runs: dict[tuple, FlowRun | None], energies: Sequence[str],
                sizes: Sequence[int], half_width: float, title: str):
    """Densities (rows: targets; columns: target, NF per K, CNF per M) over KL against K = M."""
    import matplotlib.pyplot as plt

    columns = 1 + 2 * len(sizes)
    fig = plt.figure(figsize=(max(1.9 * columns, 8), 1.9 * len(energies) + 3.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.9 * len(energies), 2.6])
    axes = np.atleast_2d(top.subplots(len(energies), columns))
    for i, energy in enumerate(energies):
        imshow_density(axes[i, 0], target.get(energy), half_width, f"target {energy.upper()}")
        for j, (flow, size) in enumerate((flow, size) for flow in FLOWS for size in sizes):
            letter = FLOWS[flow][2]
            imshow_density(axes[i, 1 + j], model.get((flow, energy, size)), half_width, f"{flow} {letter}={size}")
    loss_axes = np.atleast_1d(bottom.subplots(1, len(energies)))
    for ax, energy in zip(loss_axes, energies):
        for flow, marker in zip(FLOWS, ("s--", "o-")):
            points = [(size, final_kl(runs[(flow, energy, size)])) for size in sizes]
            points = [(s, kl) for s, kl in points if kl is not None]
            if points:
                ax.plot(*zip(*points), marker, label=flow)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(sizes), [str(s) for s in sizes])
        ax.set(xlabel="K (NF layers) = M (CNF units)", ylabel="KL(q||p) (nats)", title=f"loss, {energy.upper()}")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> None:
    parser = flow_parser("python -m neuralode figure fig4", "fig4", __doc__)
    parser.add_argument("--energies", nargs="+", default=list(ENERGIES), choices=["u1", "u2", "u3", "u4"])
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="K = M values (default: 2 8 32)")
    parser.add_argument("--grid", type=int, default=None, help="density grid points per side")
    args, started = parse(parser, argv)
    root = args.runs or runs_root(args.scale) / "fig4"
    failed = [] if args.no_train else train_runs(run_specs(root, args.energies, args.sizes), args)
    runs = require_runs(collect(root, args.energies, args.sizes), root, "Figure 4")
    folder = write_tables(args.out, "fig4", render(runs, args.scale, args.energies, args.sizes, root), CSV_HEADERS,
                          csv_rows(runs))
    grid = args.grid or scale_settings("fig4", args.scale)["grid"]
    model = model_densities(runs, HALF_WIDTH, grid)
    target = {energy: target_density(energy, HALF_WIDTH, grid) for energy in args.energies}
    fig = make_figure(model, target, runs, args.energies, args.sizes, HALF_WIDTH,
                      f"Figure 4: planar NF (K layers) vs planar CNF (M units), KL(q||p) (scale {args.scale})")
    save_outputs(fig, folder, "fig4", not args.no_tensorboard, started, runs, failed)


if __name__ == "__main__":
    main()
