"""Where the source tree is, and which commit it is: for run summaries and reports. Imports
nothing heavy, so that the report and the config both take their root from here."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

#: The repository root (this file is neuralode/source.py); configs/ lives beside the package.
REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def source_commit() -> str:
    """The short commit of the source tree, with ``+dirty`` when tracked files have uncommitted
    changes; ``unknown`` when the package is not a git checkout (an installed wheel, even one
    inside some other repository) or git is missing."""
    if not (REPO_ROOT / ".git").exists():  # a directory in a clone, a file in a worktree
        return "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "") if commit else "unknown"
