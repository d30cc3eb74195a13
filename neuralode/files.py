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
import os
import re
import tempfile
from pathlib import Path

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
