"""Checkpoint files: written atomically, read back safely, checked for being ours.

A checkpoint is a plain dictionary of tensors, lists and numbers (no pickled classes), so it
loads with ``torch.load(weights_only=True)``: opening one runs no code from the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from neuralode.train.config import UserError

FORMAT = "neuralode-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("model", "optimizer", "progress", "rng", "history", "config")


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, corrupt or not written by this trainer."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` so that ``path`` always holds a complete file: a crash while
    writing leaves the previous checkpoint in place (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, or raise :class:`CheckpointError`
    saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        if "not an allowed global" in str(error):  # a safe load met a class or function
            raise CheckpointError(
                f"cannot read checkpoint {path}: it holds pickled Python objects, which a safe load "
                "refuses; it was not written by `python -m neuralode train`"
            ) from error
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated, corrupt or not a torch file "
            f"({type(error).__name__}: {str(error).split('. ')[0]}). "
            "Use the run's other checkpoint (last.pt or best.pt) or start a new run."
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a neuralode training checkpoint (no format marker {FORMAT!r}); "
            "pass a last.pt or best.pt written by `python -m neuralode train`"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; this code reads version {VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it is incomplete")
    return state
