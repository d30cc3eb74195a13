"""Peak-memory figures, each named for what it measures.

- ``peak_saved_tensors_mb``: bytes of the tensors that the forward pass of a training step
  saved for backward and still holds (autograd's saved-tensor hooks, each storage counted
  once: :class:`SavedTensorsMeter`), the largest over the steps. This is what Table 1's memory
  column is about: it grows with the number of solver steps when backpropagating through the
  solver (RK-Net) and stays flat with the adjoint (ODE-Net), whose backward re-solves instead.
  Saved weights count; the optimiser's state and the adjoint's own backward-pass graphs
  (short-lived, one step each) do not.
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
    """Peak bytes of tensors saved for backward and still alive, per distinct storage, while
    inside ``with meter:``: the one meter behind Table 1's memory column (the trainer wraps each
    training step's forward pass) and ``make memory`` (a whole step, forward and backward).

    A storage counts from the first time a graph saves it until the last graph node that saved it
    lets go of it: when backward frees a node's saved tensors, or when a graph is dropped unused
    (a rejected solver step). So the adjoint's short-lived per-evaluation graphs of its backward
    pass count once, not once per evaluation, and a storage several nodes save counts once.
    ``last_bytes`` is the peak of the latest block, ``peak_bytes`` the largest since :meth:`reset`.
    Saved tensors are passed through unchanged: gradients (higher-order ones too) are untouched.
    """

    def __init__(self) -> None:
        self.live_bytes = 0
        self.last_bytes = 0
        self.peak_bytes = 0
        self._refs: dict = {}  # storage key -> [saved references alive, bytes]
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def reset(self) -> None:
        self.peak_bytes = 0

    def __enter__(self) -> "SavedTensorsMeter":
        self.last_bytes = self.live_bytes  # what earlier blocks' graphs still hold counts too
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self.peak_bytes = max(self.peak_bytes, self.last_bytes)

    def _pack(self, tensor: torch.Tensor) -> "_Held":
        try:
            storage = tensor.untyped_storage()
            key, nbytes = (tensor.device, storage.data_ptr()), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
            key, nbytes = id(tensor), tensor.numel() * tensor.element_size()
        ref = self._refs.setdefault(key, [0, nbytes])
        if ref[0] == 0:
            self.live_bytes += nbytes
            self.last_bytes = max(self.last_bytes, self.live_bytes)
        ref[0] += 1
        # Detached: the tensor itself would make a reference cycle with the graph node of every op
        # that saves its own output (tanh, sigmoid), and nodes no backward pass reaches (a graph
        # built only to take a trace) were then freed late or never. Autograd re-attaches on unpacking.
        return _Held(tensor.detach(), key, self)

    def _release(self, key) -> None:
        ref = self._refs[key]
        ref[0] -= 1
        if ref[0] == 0:
            self.live_bytes -= ref[1]
            del self._refs[key]


def _unpack(held: "_Held") -> torch.Tensor:
    return held.tensor


class _Held:
    """A saved tensor as autograd keeps it; when autograd drops it, the meter hears."""

    __slots__ = ("tensor", "key", "meter")

    def __init__(self, tensor: torch.Tensor, key, meter: SavedTensorsMeter):
        self.tensor, self.key, self.meter = tensor, key, meter

    def __del__(self) -> None:
        self.meter._release(self.key)


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
