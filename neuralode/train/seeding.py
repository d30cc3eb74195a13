"""Seeds, determinism and the random states a checkpoint must carry for an exact resume."""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from neuralode.train.config import ConfigError


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Ask torch for deterministic kernels (slower on GPU; CPU training is deterministic anyway).

    Ops without a deterministic implementation warn instead of failing.
    """
    if enabled:
        # cuBLAS needs this before its first use to be reproducible.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if enabled or torch.are_deterministic_algorithms_enabled():  # the call costs seconds of imports
        torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device={spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={spec} was requested but CUDA is not available to this torch "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False); use device=cpu or device=auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type != "cpu":
        raise ConfigError(f"device={spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def get_rng_state(loader_generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a run draws from, as plain lists and tensors (safe to ``torch.load``
    with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), pos, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator | None = None) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


@contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Run a block without a trace on python's, numpy's and torch's random states."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class PendingRngState:
    """The random states read from a checkpoint, applied once training reaches the point where
    they were saved (the start of the next epoch, or the next batch of a resumed one)."""

    def __init__(self):
        self.state: dict[str, Any] | None = None
        self.fresh = False  # this rank draws new streams after restoring rank 0's

    def take(self, checkpoint: dict[str, Any], rank: int, world_size: int) -> None:
        per_rank = checkpoint.get("rng_per_rank")
        if world_size > 1 and per_rank is not None and len(per_rank) == world_size:
            self.state, self.fresh = per_rank[rank], False
        else:  # written by a single process or another world size: rank 0's stream, fresh ones elsewhere
            self.state, self.fresh = checkpoint["rng"], rank > 0

    def apply(self, loader_generator: torch.Generator | None, fresh_seed: int) -> None:
        """Restore the states (the loader's shuffle too, if given); a no-op when none is pending."""
        if self.state is None:
            return
        set_rng_state(self.state, loader_generator)
        if self.fresh:  # the shuffle (loader_generator) stays shared between the ranks
            seed_everything(fresh_seed)
        self.state, self.fresh = None, False
