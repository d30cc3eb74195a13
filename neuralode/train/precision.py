"""How a training step uses the device's arithmetic: mixed precision, TF32 and channels-last.

Three trainer settings, all off by default so that a run's numbers do not depend on them:

- ``trainer.precision``: ``fp32`` (default), ``bf16`` or ``fp16``. The two half precisions run
  the forward pass under ``torch.autocast``; fp16 also scales the loss (``torch.amp.GradScaler``)
  so that small gradients do not flush to zero, and needs CUDA. The ODE solver's state stays in
  the precision it was given (the ODE block keeps it in fp32): only ``func`` computes in half,
  and its result is cast back to the state's dtype, so the error control keeps its digits.
- ``trainer.tf32``: lets CUDA matrix products and convolutions use TF32 (``null``: PyTorch's
  defaults, convolutions on and matrix products off). No effect on CPU.
- ``trainer.channels_last``: the model's 4-D weights and every 4-D batch tensor in NHWC layout,
  which cuDNN's tensor-core convolutions prefer.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import torch

from neuralode.train.config import PRECISIONS
from neuralode.train.evaluation import map_tensors


class Precision:
    """Autocast, loss scaling and memory layout of one trainer, from its settings."""

    def __init__(self, precision: str, tf32: bool | None, channels_last: bool, device: torch.device):
        # The settings were checked by neuralode.train.config.check_trainer_settings.
        self.dtype = PRECISIONS[precision]
        self.device = device
        self.channels_last = channels_last
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        if tf32 is not None and device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def batch(self, batch: Any) -> Any:
        """``batch`` (moved to the device) with its 4-D floating tensors in channels-last layout."""
        if not self.channels_last:
            return batch
        return map_tensors(batch, lambda t: t.contiguous(memory_format=torch.channels_last)
                           if t.dim() == 4 and t.is_floating_point() else t)

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, clip: Callable[[], Any] | None = None) -> None:
        """Clip (on the true gradients) and step; with loss scaling a step whose gradients
        overflowed is skipped and the scale lowered."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if clip is not None:
            clip()
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
