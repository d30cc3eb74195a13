"""Which code produced a result: the commit of the source tree, for run summaries and reports."""

from __future__ import annotations

import functools
import subprocess

from neuralode.train.config import REPO_ROOT


@functools.lru_cache(maxsize=1)
def source_commit() -> str:
    """The short commit of the source tree, with ``+dirty`` when tracked files have uncommitted
    changes; ``unknown`` outside a git checkout (an installed wheel) or without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "") if commit else "unknown"
