"""SDE-Net for MNIST (Kong, Sun and Zhang, ICML 2020): the ODE-Net with a Brownian term whose
size a second network learns, so that the spread of the predictions says how far an input is
from the training data.

    downsampling  the MNIST ODE-Net's: 28x28 images -> 64 feature maps of 6x6, h0
    SDE block     dh = f(t, h) dt + sigma_max * g(h0) dW,   t in [0, T], ``steps`` Euler-Maruyama steps
                  f: the ODE-Net's dynamics (GN ReLU ConcatConv GN ReLU ConcatConv GN)
                  g: the diffusion net, GN ReLU ConcatConv GN ReLU ConcatConv, then GN ReLU
                     pool Linear(c, 1) sigmoid: one number in (0, 1) per image, from h0 alone
    head          the ODE-Net's: GN ReLU global-average-pool Linear(c, 10)

The reference MNIST model (the authors' ``MNIST/models/sdenet_mnist.py``): 6 steps over T = 6
(dt = 1), sigma_max = 20 while training ("a smaller sigma for training stability") and 500 at
test; convolutions Kaiming-normal (fan_out), linear layers N(0, 1e-3), biases 0. Its diffusion is
evaluated once, at t = 0 on h0, so the noise is additive during the solve (Euler-Maruyama and
Milstein coincide). ``sigma(x)`` gives the diffusion net's output, the model's own uncertainty score.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from neuralode.models.odenet import ConcatConv2d, ODEFunc, classifier_head, downsampling, norm
from neuralode.ode.sde import SDE_METHODS, sdeint


class DiffusionNet(nn.Module):
    """g(h0): feature maps (B, c, H, W) to one diffusion level in (0, 1) per example, (B, 1)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.norm1, self.conv1 = norm(channels), ConcatConv2d(channels, channels)
        self.norm2, self.conv2 = norm(channels), ConcatConv2d(channels, channels)
        self.head = nn.Sequential(norm(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(channels, 1), nn.Sigmoid())

    def forward(self, t: torch.Tensor | float, h: torch.Tensor) -> torch.Tensor:
        h = self.conv1(t, torch.relu(self.norm1(h)))
        h = self.conv2(t, torch.relu(self.norm2(h)))
        return self.head(h)


def reference_init(module: nn.Module) -> None:
    """The reference code's initialisation: Kaiming-normal (fan_out) convolutions, N(0, 1e-3)
    linear weights, zero biases (GroupNorm keeps torch's ones and zeros)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1e-3)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SDENet(nn.Module):
    """Downsampling, an SDE block solved with ``steps`` fixed steps over [0, ``t1``], head.

    ``sigma_train`` and ``sigma_eval`` are sigma_max in training and in evaluation mode.
    ``forward(x)`` is one sample of the logits (a fresh Brownian path each call, from torch's
    global generator or ``generator``); average the softmax over several calls for a prediction.
    ``diffusion`` may be given in place of the built-in :class:`DiffusionNet` (any module
    ``(t, h0) -> (B, 1)``; another shape is refused with the shape it must have).
    """

    def __init__(self, channels: int = 64, num_classes: int = 10, steps: int = 6, t1: float = 6.0,
                 sigma_train: float = 20.0, sigma_eval: float = 500.0, method: str = "euler",
                 diffusion: nn.Module | None = None, init: bool = True):
        super().__init__()
        if channels < 1 or num_classes < 2:
            raise ValueError(f"SDENet needs channels >= 1 and num_classes >= 2, got {channels} and {num_classes}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"SDENet needs steps, the number of Euler-Maruyama steps, to be a positive integer; got {steps!r}")
        if not (math.isfinite(t1) and t1 > 0):
            raise ValueError(f"SDENet needs t1, the end time of the SDE, to be positive; got {t1!r}")
        for name, value in (("sigma_train", sigma_train), ("sigma_eval", sigma_eval)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"SDENet needs {name} >= 0 (sigma_max, the largest diffusion), got {value!r}")
        if method not in SDE_METHODS:
            raise ValueError(f"SDENet method must be one of {', '.join(SDE_METHODS)}, got {method!r}")
        self.steps, self.t1, self.method = steps, float(t1), method
        self.sigma_train, self.sigma_eval = float(sigma_train), float(sigma_eval)
        self.downsampling = downsampling(channels)
        self.drift = ODEFunc(channels)
        self.diffusion = diffusion if diffusion is not None else DiffusionNet(channels)
        self.head = classifier_head(channels, num_classes)
        if init:
            reference_init(self)
        self.register_buffer("t", torch.tensor([0.0, float(t1)]), persistent=False)

    @property
    def sigma_max(self) -> float:
        return self.sigma_train if self.training else self.sigma_eval

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h0: the downsampled images."""
        return self.downsampling(x)

    def diffusion_of(self, h0: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """g(h0), shape (B, 1), checked. ``frozen``: the diffusion net's parameters take no gradient
        (h0 still does), as when the reference trains the drift with the diffusion left alone."""
        if frozen:
            params = {name: p.detach() for name, p in self.diffusion.named_parameters()}
            out = functional_call(self.diffusion, params, (0.0, h0))
        else:
            out = self.diffusion(0.0, h0)
        if not isinstance(out, torch.Tensor) or out.shape != (h0.shape[0], 1):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"SDENet's diffusion net must return one value per example, shape ({h0.shape[0]}, 1); "
                             f"got {got}")
        return out

    def sigma(self, x: torch.Tensor) -> torch.Tensor:
        """The diffusion net's output g(h0) in (0, 1) for images ``x``, shape (B,): high = uncertain."""
        return self.diffusion_of(self.features(x)).squeeze(1)

    def solve(self, h0: torch.Tensor, g: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """h(T) from h0 with diffusion sigma_max * g (B, 1), Euler-Maruyama (or Milstein) on the fixed grid."""
        scale = (self.sigma_max * g).view(-1, *([1] * (h0.dim() - 1)))
        return sdeint(self.drift, lambda t, h: scale, h0, self.t.to(h0.dtype), method=self.method,
                      dt=self.t1 / self.steps, generator=generator)[-1]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h0 = self.features(x)
        return self.head(self.solve(h0, self.diffusion_of(h0), generator))
