"""What every paper artefact shares: the scales, the output folder, tables, claims and figures.
The training runs behind them (found, trained, reused or resumed, loaded) are
:mod:`neuralode.paper.runs`.

Each builder (``table1.py``, ``memory.py``, ``fig1.py`` ...) writes its files into
``outputs/paper/`` (or ``--out``), says in every table which scale produced it, and exposes
``main(argv)`` for ``python -m neuralode.paper.<name>`` and the ``table``/``figure``
subcommands.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (also on machines without a display)

from neuralode.paper.registry import SCALES
from neuralode.source import REPO_ROOT


def scale_settings(artefact: str, scale: str) -> dict[str, Any]:
    """What ``artefact`` (fig1, fig3, ...) draws or sweeps at ``scale``: configs/paper_scales.yaml."""
    from omegaconf import OmegaConf

    table = OmegaConf.load(REPO_ROOT / "configs" / "paper_scales.yaml")
    return OmegaConf.to_container(table[check_scale(scale)][artefact])


def root_dir() -> Path:
    """The repository root, or ``$NEURALODE_ROOT`` (as in configs/paths/default.yaml)."""
    return Path(os.environ.get("NEURALODE_ROOT") or REPO_ROOT)


def paper_dir() -> Path:
    """Where the paper artefacts go by default: ``outputs/paper``."""
    return root_dir() / "outputs" / "paper"


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise SystemExit(f"error: unknown scale {scale!r}; use one of: {', '.join(SCALES)} (make ... SCALE=<scale>)")
    return scale


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="smoke", choices=SCALES,
                        help="smoke: CPU, minutes; cpu: the paper's claims on a CPU; paper: the full recipe (GPU). "
                             "Default: smoke")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/paper)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")


def out_dir(path: Path | None) -> Path:
    folder = Path(path) if path is not None else paper_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def smoke_threads(scale: str) -> None:
    """Below paper scale use one CPU thread (unless OMP_NUM_THREADS says otherwise): the tensors
    are small and the CPU often shared, where two threads fighting are many times slower than one."""
    import torch

    if scale != "paper" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are printed with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


#: The header of every artefact's claims table; REPORT.md gathers the rows of all of them.
CLAIM_HEADERS = ["claim", "ours", "paper", "verdict"]


def claims_table(rows: Sequence[Sequence[Any]]) -> list[str]:
    """The markdown lines of a claims table (none when there is nothing to judge yet)."""
    return [markdown_table(CLAIM_HEADERS, rows)] if rows else []


def verdict(holds: bool) -> str:
    return "yes" if holds else "no"


def write_csv(path: Path, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)


def fmt(value: float | None, spec: str = ".3g", missing: str = "-") -> str:
    """A number for a table cell, ``-`` when it was not measured."""
    return missing if value is None else format(value, spec)


def epochs_scale(epochs: Iterable[int]) -> str:
    """The scale a table states for runs that did not all reach the full recipe."""
    epochs = sorted(set(epochs)) or [0]
    span = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
    return f"custom ({span} epochs)"


def shown_path(path: Path, base: Path | None = None) -> str:
    """``path`` relative to ``base`` where it lies below it, else as it is."""
    if base is not None:
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)


class Stages:
    """Progress of a long paper command, one stderr line a stage with the time so far, so that a
    figure that measures for minutes is not silent (issue 32: fig3 sat 180 s without a line)."""

    def __init__(self, name: str):
        self.name, self.started = name, time.perf_counter()

    def __call__(self, text: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.started:6.1f} s] {text}", file=sys.stderr, flush=True)


def write_table_files(folder: Path, name: str, markdown: str, headers: Sequence[str],
                      rows: Sequence[Sequence[Any]]) -> tuple[Path, Path]:
    """``<folder>/<name>.md`` and ``<folder>/<name>.csv``."""
    folder = Path(folder)
    md, csv_path = folder / f"{name}.md", folder / f"{name}.csv"
    md.write_text(markdown)
    write_csv(csv_path, headers, rows)
    return md, csv_path


# --------------------------------------------------------------------------- figures of a trained run


def save_figure(fig, folder: Path, name: str, step: int = 0, tensorboard: bool = True, dpi: int = 120) -> Path:
    """``<folder>/<name>.png``, and the figure in TensorBoard under ``<folder>/tensorboard/<name>``
    (at ``step``); the figure is closed either way."""
    import matplotlib.pyplot as plt

    path = Path(folder) / f"{name}.png"
    fig.savefig(path, dpi=dpi)
    if tensorboard:
        from neuralode.train.loggers import TensorBoardLogger

        logger = TensorBoardLogger(Path(folder) / "tensorboard" / name)
        logger.log_figures({name: fig}, step=step)  # closes the figure
        logger.close()
    else:
        plt.close(fig)
    return path


def write_figure(fig, text: str, folder: Path, name: str, step: int = 0, tensorboard: bool = True) -> dict[str, Path]:
    """``<name>.md`` (``text``) and the figure (:func:`save_figure`) in ``folder``."""
    md = Path(folder) / f"{name}.md"
    md.write_text(text)
    return {"png": save_figure(fig, folder, name, step, tensorboard), "md": md}
