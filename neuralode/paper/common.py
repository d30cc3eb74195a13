"""What every paper artefact shares: the scales, the output folder, tables and plots.

Each builder (``table1.py``, ``memory.py``, ``fig1.py`` ...) writes its files into
``outputs/paper/`` (or ``--out``), says in every table which scale produced it, and exposes
``main(argv)`` for ``python -m neuralode.paper.<name>`` and the ``table``/``figure``
subcommands.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (also on machines without a display)

#: The scales of every target: ``smoke`` (CPU, minutes, tiny limits) and ``paper`` (the full recipe, GPU).
SCALES = ("smoke", "paper")

REPO_ROOT = Path(__file__).resolve().parents[2]


def root_dir() -> Path:
    """The repository root, or ``$NEURALODE_ROOT`` (as in configs/paths/default.yaml)."""
    return Path(os.environ.get("NEURALODE_ROOT") or REPO_ROOT)


def paper_dir() -> Path:
    """Where the paper artefacts go by default: ``outputs/paper``."""
    return root_dir() / "outputs" / "paper"


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise SystemExit(f"error: unknown scale {scale!r}; use one of: {', '.join(SCALES)} (SCALE=smoke or SCALE=paper)")
    return scale


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="smoke", choices=SCALES,
                        help="smoke: CPU, minutes; paper: the full recipe (GPU). Default: smoke")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/paper)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")


def out_dir(path: Path | None) -> Path:
    folder = Path(path) if path is not None else paper_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def resolve_device(spec: str):
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {spec} asked for CUDA, but torch sees no GPU here; use --device cpu")
    return device


def smoke_threads(scale: str) -> None:
    """At smoke scale use one CPU thread (unless OMP_NUM_THREADS says otherwise): the tensors are
    small and the CPU often shared, where two threads fighting are many times slower than one."""
    import torch

    if scale == "smoke" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def git_commit() -> str:
    """The short commit of the working tree, with ``+dirty`` when it has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are printed with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)


def fmt(value: float | None, spec: str = ".3g", missing: str = "-") -> str:
    """A number for a table cell, ``-`` when it was not measured."""
    return missing if value is None else format(value, spec)
