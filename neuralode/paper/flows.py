"""What the flow figures (``fig4.py``, ``fig5.py``, ``ffjord2d.py``) share.

Each trains (or reuses) a set of runs, one folder a run, writes a markdown table and a CSV
from their ``metrics.jsonl``, then loads the trained flows and draws densities and samples:

- runs: :func:`train_runs` (train, resume or reuse), :func:`load_run` (a finished run as a
  :class:`FlowRun`), :func:`load_task` (its trained model), :func:`draw_runs` (one drawing per run);
- panels: :func:`grid_density`, :func:`base_samples`, :func:`imshow_density`, :func:`scatter_points`;
- command line: :func:`flow_parser` and :func:`parse`, then :func:`require_runs`,
  :func:`write_tables` and :func:`save_outputs` around the figure's own drawing.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence, TypeVar

import numpy as np
import torch

from neuralode.files import read_json, read_json_lines
from neuralode.paper import common
from neuralode.paper.runs import RunSpec, add_training_args, ensure_runs, exit_if_failed
from neuralode.paper.common import SCALES, out_dir, smoke_threads, write_table_files

T = TypeVar("T")


# --------------------------------------------------------------------------- runs
def train_runs(specs: Sequence[RunSpec], args: argparse.Namespace) -> list[RunSpec]:
    """Train, resume or reuse a figure's runs at ``args.scale`` on ``args.device`` with the
    ``--set`` overrides (:func:`neuralode.paper.runs.ensure_runs`); returns those that failed, so that one failed
    run does not stop the others from being drawn."""
    return ensure_runs(specs, args.scale, [f"device={args.device}", *args.overrides], args.jobs)


@dataclass
class FlowRun:
    """A finished run: its folder, ``summary.json`` and ``metrics.jsonl`` records."""

    path: Path
    summary: dict
    records: list[dict]

    def final(self, key: str) -> Any:
        return self.records[-1].get(key) if self.records else None

    def last_with(self, key: str) -> Any:
        """The latest record's value of ``key`` (training NFE is absent from a final
        evaluation that falls right after an epoch's end)."""
        return next((r[key] for r in reversed(self.records) if key in r), None)

    @property
    def steps(self) -> int:
        return int(self.summary.get("steps", 0))


def load_run(path: Path) -> FlowRun | None:
    """The run in ``path``, or None when it has not finished (no summary.json or metrics)."""
    path = Path(path)
    summary, metrics = path / "summary.json", path / "metrics.jsonl"
    if not summary.is_file() or not metrics.is_file():
        return None
    return FlowRun(path, read_json(summary), read_json_lines(metrics))


def load_task(run_dir: Path, device: torch.device | str = "cpu"):
    """The trained task of a run (its last.pt: the final model), in evaluation mode."""
    from neuralode.train.run import load_trained

    return load_trained(Path(run_dir) / "last.pt", device)[0]


def draw_runs(runs: dict[Hashable, FlowRun | None], draw: Callable[[torch.nn.Module, float], T],
              half_width: float = 4.0) -> tuple[dict[Hashable, T], float]:
    """``draw(flow, plot_range)`` for every run with a trained model (``last.pt``), by key; and the
    half width of the plots: the runs' ``plot_range`` (``half_width`` when no run has a model)."""
    drawn = {}
    for key, run in runs.items():
        if run is not None and (run.path / "last.pt").is_file():
            task = load_task(run.path)
            half_width = task.plot_range
            drawn[key] = draw(task.flow, half_width)
    return drawn, half_width


# --------------------------------------------------------------------------- panels
def grid_density(flow: torch.nn.Module, half_width: float, grid: int, fraction: float = 1.0) -> np.ndarray:
    """q on a ``grid`` x ``grid`` grid over [-half_width, half_width]^2 (rows = y), after
    ``fraction`` of the flow (1 = the model)."""
    from neuralode.tasks.density import density_on_grid

    return density_on_grid(flow, half_width, grid, torch.zeros(1, 2), fraction).numpy()


def base_samples(samples: int, seed: int = 0) -> torch.Tensor:
    """``samples`` seeded base points z0 ~ N(0, I) in 2-D, the same on every call."""
    return torch.randn(samples, 2, generator=torch.Generator().manual_seed(seed))


def imshow_density(ax, density: np.ndarray | None, half_width: float, title: str) -> None:
    """One density panel (or a note where the run is missing), axes off."""
    if density is None:
        ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.imshow(density, origin="lower", extent=(-half_width, half_width, -half_width, half_width), cmap="viridis")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def scatter_points(ax, points: np.ndarray | None, half_width: float, title: str = "") -> None:
    """One panel of points (or a note where the run is missing), axes off."""
    if points is None:
        ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.scatter(points[:, 0], points[:, 1], s=0.5, alpha=0.5, color="tab:blue", rasterized=True)
    ax.set(xlim=(-half_width, half_width), ylim=(-half_width, half_width), xticks=[], yticks=[])
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


# --------------------------------------------------------------------------- command line
def flow_parser(prog: str, figure: str, doc: str) -> argparse.ArgumentParser:
    """The options of every flow figure (scale, folders, device, training, Hydra overrides);
    the figure adds its own. ``doc``: the module docstring, whose first paragraph describes it."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--scale", default="smoke", choices=SCALES, help="default: smoke")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/paper)")
    parser.add_argument("--device", default="auto", help="training device: auto | cpu | cuda | cuda:N")
    parser.add_argument("--runs", type=Path, default=None,
                        help=f"folder of the runs (default: outputs/paper/runs/<scale>/{figure})")
    parser.add_argument("--no-train", action="store_true", help="only draw what the runs folder already holds")
    add_training_args(parser)
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write the TensorBoard event file")
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, float]:
    """The arguments, with logging and the smoke scale's threads set up; and the start time."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    smoke_threads(args.scale)
    return args, time.perf_counter()


def require_runs(runs: dict[Hashable, FlowRun | None], root: Path, what: str) -> dict[Hashable, FlowRun | None]:
    """``runs``, or a clear exit when none of them has finished."""
    if not any(runs.values()):
        raise SystemExit(f"error: {root} holds no finished {what} run; run without --no-train to train them")
    return runs


def write_tables(out: Path | None, name: str, markdown: str, headers: Sequence[str], rows: Sequence[Sequence]) -> Path:
    """``<name>.md`` and ``<name>.csv`` in the output folder (made if missing); returns the folder."""
    folder = out_dir(out)
    write_table_files(folder, name, markdown, headers, rows)
    return folder


def save_outputs(fig, folder: Path, name: str, tensorboard: bool, started: float, runs: dict[Hashable, FlowRun | None],
                 failed: Sequence[RunSpec] = ()) -> None:
    """Save the figure (PNG and TensorBoard), add the peak memory of the training runs and of this
    drawing to ``<name>.md``, then print it and what was written; exit with status 1 naming the
    runs that ``failed`` to train, if any."""
    from neuralode.train.memory import peak_rss_mb

    png = common.save_figure(fig, folder, name, tensorboard=tensorboard, dpi=110)  # these figures' dpi
    trained = [run.last_with("peak_rss_mb") for run in runs.values() if run is not None]
    trained = [value for value in trained if value is not None]
    with (folder / f"{name}.md").open("a") as md:
        md.write(f"\nPeak resident memory: training runs at most "
                 f"{f'{max(trained):.0f} MB' if trained else '-'}, this drawing {peak_rss_mb():.0f} MB.\n")
    print((folder / f"{name}.md").read_text())
    print(f"wrote {png}, {folder / f'{name}.md'} and {folder / f'{name}.csv'} in {time.perf_counter() - started:.0f} s")
    exit_if_failed(failed)
