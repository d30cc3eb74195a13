"""Writing a file so that its name never shows half of it.

Every file a run or the data preparation writes (checkpoints, metrics.jsonl rewrites,
summary.json, converted MNIST) goes through :func:`write_atomically`: the data goes to a
uniquely named temporary file beside the target, ``.<name>.<random>.tmp``, is fsynced, and is
renamed over the target. A crash or a kill leaves the old file whole (and at most a stray
temporary file, which :data:`TEMP_NAME` recognises); concurrent writers never share a
temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from neuralode.errors import UserError

#: A temporary file of write_atomically: "." + the target's name + "." + mkstemp's random part + ".tmp".
TEMP_NAME = re.compile(r"\.(?P<name>[^/]+)\.[A-Za-z0-9_]{8}\.tmp")


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Replace ``path`` by ``data`` (text is written as UTF-8) in one rename."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, for a moment, in every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class BrokenFileError(UserError, ValueError):
    """A run's JSON file (summary.json, a line of metrics.jsonl) that does not parse."""


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path``, or :class:`BrokenFileError` naming the file and the place."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BrokenFileError(f"{path} is not valid JSON ({_where(error)}); the run that wrote it may have been "
                              "cut off or the file edited: rerun it, or move the folder aside") from None


def read_json_lines(path: str | Path) -> list[Any]:
    """One JSON value a non-empty line of ``path`` (``metrics.jsonl``), or
    :class:`BrokenFileError` naming the file and the line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as error:
        raise BrokenFileError(f"{path} is not text ({error.reason}); move the folder aside") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise BrokenFileError(f"{path}, line {number}, is not valid JSON ({error.msg}): {line[:60]!r}; "
                                  "remove the line (the other records are whole) or rerun the run") from None
    return records


def _where(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"line {error.lineno}, column {error.colno}: {error.msg}"
    return str(error)


def check_can_create(path: str | Path) -> Path:
    """The nearest existing folder above (or at) ``path``, once it has taken a temporary entry
    (made and removed again): ``path`` can then be created. Raises ``NotADirectoryError`` when
    that nearest existing path is a file, and the probe's ``OSError`` (read-only, no permission)
    otherwise; either one's ``filename`` is the existing path."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(existing))
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".neuralode-check-").cleanup()
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(existing)) from None
    return existing
