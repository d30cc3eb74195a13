"""Checkpoint files: written atomically, verified on load, read back safely, checked for being ours.

A checkpoint is a plain dictionary of tensors, lists and numbers (no pickled classes), so it
loads with ``torch.load(weights_only=True)``: opening one runs no code from the file. Besides
the training state it holds ``format``, ``version`` and ``sha256``: a SHA-256 digest of
everything else in it (every tensor's dtype, shape and bytes, every other value and every
key, in a fixed encoding: see :func:`payload_digest`). :func:`load_checkpoint` recomputes it,
so a file with flipped bytes is refused rather than evaluated or resumed with wrong weights.
Version 1 files (written before the digest) still load, with a warning that they cannot be
verified.

:func:`save_checkpoint` writes a temporary ``.<name>.<random>.tmp`` beside the checkpoint,
fsyncs it and renames it over the old one, so the old file stays whole until the new one is;
a full disk is reported in one line (:class:`CheckpointError`) with the old file kept.
:func:`clean_stale_temp_files` removes the temporary files that an interrupted save left.
"""

from __future__ import annotations

import errno
import hashlib
import io
import math
import struct
import warnings
from pathlib import Path
from typing import Any

import torch

from neuralode.files import TEMP_NAME, write_atomically
from neuralode.train.config import UserError

FORMAT = "neuralode-checkpoint"
VERSION = 2
#: Versions this code reads: 1 (no digest, read unverified) and 2 (with a digest).
READABLE_VERSIONS = (1, 2)
DIGEST_KEY = "sha256"
REQUIRED_KEYS = ("model", "optimizer", "progress", "rng", "history", "config")
#: ``OSError.errno`` values that mean the disk (or the user's quota) is full.
DISK_FULL = tuple(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)


_warned_unverified: set[str] = set()


def full_disk_words(error: OSError) -> str:
    """What stopped a write that ran out of room: the disk, a quota, or the file size limit."""
    return "the file size limit (ulimit -f) was reached" if error.errno == errno.EFBIG else "no space left on device"


def full_disk_remedy(error: OSError) -> str:
    return "raise the limit (ulimit -f unlimited)" if error.errno == errno.EFBIG else "free space"


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, corrupt or not written by this trainer."""


class CheckpointWarning(UserWarning):
    """A checkpoint that loads but cannot be verified (written before checkpoints had a digest)."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` and its digest to ``path`` so that ``path`` always holds a complete file:
    a crash while writing leaves the previous checkpoint in place (temporary file, fsync,
    rename). A full disk raises :class:`CheckpointError` (one line), the previous file kept."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    payload.pop(DIGEST_KEY, None)
    payload[DIGEST_KEY] = payload_digest(payload)
    try:
        buffer = io.BytesIO()  # serialised in memory: the file writes below raise plain OSErrors
        torch.save(payload, buffer)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, buffer.getvalue())
    except OSError as error:
        if error.errno in DISK_FULL or error.errno == errno.EFBIG:
            kept = f"the previous {path.name} is kept" if path.is_file() else f"no {path.name} was written"
            then = ("resume with resume=true" if (path.parent / "last.pt").is_file()
                    else "run the same command again (there is no last.pt to resume from yet)")
            raise CheckpointError(f"{full_disk_words(error)} writing {path}; {kept}; {full_disk_remedy(error)} and "
                                  f"{then}") from None
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and check its digest, or raise
    :class:`CheckpointError` saying what is wrong with the file."""
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
            f"({type(error).__name__}: {str(error).splitlines()[0].split('. ')[0] if str(error) else ''}). "
            "Use the run's other checkpoint (last.pt or best.pt) or start a new run."
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a neuralode training checkpoint (no format marker {FORMAT!r}); "
            "pass a last.pt or best.pt written by `python -m neuralode train`"
        )
    version = state.get("version")  # before the digest: a newer version may digest differently
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has checkpoint version {version}; this code reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    stored_digest = state.pop(DIGEST_KEY, None)
    if stored_digest is not None:
        if not isinstance(stored_digest, str) or payload_digest(state) != stored_digest:
            raise CheckpointError(
                f"checkpoint {path} is corrupt (its contents do not match the digest stored when it was "
                "written); use the run's other checkpoint (last.pt or best.pt) or start a new run"
            )
    elif state.get("version") != 1:  # every version since 1 stores a digest
        raise CheckpointError(
            f"checkpoint {path} is corrupt or incomplete: it has no digest (version {state.get('version')!r}); "
            "use the run's other checkpoint (last.pt or best.pt) or start a new run"
        )
    if stored_digest is None and str(path.resolve()) not in _warned_unverified:
        _warned_unverified.add(str(path.resolve()))
        warnings.warn(
            f"{path} is a version-1 checkpoint, written before checkpoints carried a digest: "
            "it cannot be verified (a damaged file would load as if whole)",
            CheckpointWarning,
            stacklevel=2,
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it is incomplete")
    return state


def load_weights(module: torch.nn.Module, state: dict[str, Any], mismatch: str) -> None:
    """A checkpoint's ``state["model"]`` into ``module``; weights of another shape or name are a
    CheckpointError that says ``mismatch`` and the first difference torch found."""
    try:
        module.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{mismatch} ({str(error).splitlines()[0]})") from error


def clean_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files (``.<name>.<random>.tmp``) that saves interrupted by a crash
    or a kill left in ``run_dir``; returns those removed. Call it only while no other process
    is saving into ``run_dir`` (a run holds its folder's lock)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    removed = []
    for tmp in sorted(run_dir.glob(".*.tmp")):
        if tmp.is_file() and TEMP_NAME.fullmatch(tmp.name):
            try:
                tmp.unlink()
            except FileNotFoundError:
                continue
            removed.append(tmp)
    return removed


def payload_digest(state: dict[str, Any]) -> str:
    """The SHA-256 of ``state`` (without its ``sha256`` key) in a fixed encoding that depends on
    the values alone, not on how torch serialised them or onto which device they were loaded."""
    digest = hashlib.sha256()
    _feed(digest, {key: value for key, value in state.items() if key != DIGEST_KEY})
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` to ``digest``: a type tag, then a length-prefixed encoding of the value."""

    def put(tag: bytes, data: bytes = b"") -> None:
        digest.update(tag + struct.pack("<Q", len(data)) + data)

    if value is None:
        put(b"N")
    elif isinstance(value, bool):
        put(b"B", b"\x01" if value else b"\x00")
    elif isinstance(value, int):
        put(b"I", str(value).encode())
    elif isinstance(value, float):
        put(b"F", (value.hex() if math.isfinite(value) else repr(value)).encode())
    elif isinstance(value, complex):
        put(b"C", repr(value).encode())
    elif isinstance(value, str):
        put(b"S", value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, (bytes, bytearray)):
        put(b"Y", bytes(value))
    elif isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.layout != torch.strided or tensor.is_quantized:
            tensor = tensor.to_dense() if tensor.layout != torch.strided else tensor.dequantize()
        tensor = tensor.cpu().contiguous()
        put(b"T", f"{tensor.dtype}|{tuple(tensor.shape)}".encode())
        put(b"D", tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, (torch.dtype, torch.device)):
        put(b"O", f"{type(value).__name__}:{value}".encode())
    elif isinstance(value, dict):
        put(b"M", str(len(value)).encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        put(b"L" if isinstance(value, list) else b"U", str(len(value)).encode())
        for item in value:
            _feed(digest, item)
    else:  # nothing a safe load accepts; still written, so that saving never fails over the digest
        put(b"R", f"{type(value).__module__}.{type(value).__qualname__}:{value!r}".encode())
