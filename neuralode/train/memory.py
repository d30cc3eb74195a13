"""Peak-memory figures, each named for what it measures.

- ``peak_saved_tensors_mb``: bytes of the tensors that the forward pass of a training step
  saved for backward (autograd's saved-tensor hooks, each storage counted once), the largest
  over the steps. This is what Table 1's memory column is about: it grows with the number of
  solver steps when backpropagating through the solver (RK-Net) and stays flat with the
  adjoint (ODE-Net), whose backward re-solves instead. Saved weights count; the optimiser's
  state and the adjoint's own backward-pass graphs (short-lived, one step each) do not.
- ``peak_rss_mb``: the process's peak resident set size since it started (all of Python,
  torch and the data), from the operating system.
- ``cuda_max_allocated_mb``: ``torch.cuda.max_memory_allocated`` on the run's device.
"""

from __future__ import annotations

import resource
import sys

import torch

MB = 2**20


class SavedTensorsMeter:
    """Bytes of tensors saved for backward while inside ``with meter:``, per distinct storage.

    Wrap the forward pass of a training step: what it saves is what backward will need, all
    held at once when backward starts. ``last_bytes`` is the latest block's total,
    ``peak_bytes`` the largest since :meth:`reset`. Saved tensors are passed through
    unchanged, so gradients (higher-order ones included) are untouched.
    """

    def __init__(self) -> None:
        # storage key -> a tensor on it, held until the block ends: a storage freed mid-block (a
        # rejected solver step's graph) could otherwise hand its address to a new one, which
        # would then go uncounted, depending on the allocator (so not reproducibly).
        self._storages: dict = {}
        self.last_bytes = 0
        self.peak_bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    def reset(self) -> None:
        self.peak_bytes = 0

    def __enter__(self) -> "SavedTensorsMeter":
        self._storages.clear()
        self.last_bytes = 0
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._storages.clear()
        self.peak_bytes = max(self.peak_bytes, self.last_bytes)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        try:
            storage = tensor.untyped_storage()
            key, nbytes = (tensor.device, storage.data_ptr()), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
            key, nbytes = id(tensor), tensor.numel() * tensor.element_size()
        # Detached: the tensor itself would make a reference cycle with the graph node of every op
        # that saves its own output (tanh, sigmoid), and nodes no backward pass reaches (a graph
        # built only to take a trace) were then never freed. Autograd re-attaches on unpacking.
        detached = tensor.detach()
        if key not in self._storages:
            self._storages[key] = detached
            self.last_bytes += nbytes
        return detached


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB  # bytes on macOS, KiB on Linux


def reset_cuda_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def cuda_max_allocated_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / MB


def memory_peaks_mb(device: torch.device, peak_saved_bytes: int | None) -> dict[str, float]:
    """An evaluation record's memory columns: the largest forward pass's saved tensors (when
    measured), the process's peak RSS, and on CUDA the device's peak allocation."""
    peaks = {} if peak_saved_bytes is None else {"peak_saved_tensors": peak_saved_bytes / MB}
    peaks["peak_rss"] = peak_rss_mb()
    if device.type == "cuda":
        peaks["cuda_max_allocated"] = cuda_max_allocated_mb(device)
    return peaks
