"""A fingerprint of the ODE core for A/B checks of a refactor: for 8 fixed solves (a tiny MLP
and the MNIST conv field; dopri5, rk4, adams; no grad, direct, adjoint) the forward and backward
NFE, accepted and rejected steps, an md5 of the outputs and gradients, and the median time.

    PYTHONPATH=<tree A> python scripts/bench_fingerprint.py a.json [case prefix]
    PYTHONPATH=<tree B> python scripts/bench_fingerprint.py b.json [case prefix]

Same counts and digests mean the same arithmetic. For times, run A and B in turn several times,
pinned to one core (``taskset -c 1``), and compare the medians pair by pair.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time

import torch
from torch import nn

from neuralode.ode import collect_stats, odeint


class TinyField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 2))

    def forward(self, t, y):
        return self.net(y)


class ConcatConv(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, t, x):
        return self.conv(torch.cat([t.expand(x.shape[0], 1, *x.shape[2:]), x], 1))


class ConvField(nn.Module):
    """The MNIST ODE function: GN-ReLU-ConcatConv-GN-ReLU-ConcatConv-GN."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(32, channels), ConcatConv(channels)
        self.norm2, self.conv2 = nn.GroupNorm(32, channels), ConcatConv(channels)
        self.norm3 = nn.GroupNorm(32, channels)

    def forward(self, t, x):
        out = self.conv1(t, torch.relu(self.norm1(x)))
        return self.norm3(self.conv2(t, torch.relu(self.norm2(out))))


def cases() -> dict:
    torch.manual_seed(0)
    tiny, conv = TinyField(), ConvField()
    y_tiny, y_conv = torch.randn(512, 2), torch.randn(32, 64, 6, 6)
    dopri5_tiny = dict(method="dopri5", rtol=1e-5, atol=1e-5)
    return {
        "tiny dopri5 fwd": (tiny, y_tiny, dopri5_tiny, None),
        "tiny dopri5 direct": (tiny, y_tiny, dopri5_tiny, "direct"),
        "tiny dopri5 adjoint": (tiny, y_tiny, dopri5_tiny, "adjoint"),
        "tiny rk4 fwd": (tiny, y_tiny, dict(method="rk4", options=dict(step_size=0.05)), None),
        "tiny adams adjoint": (tiny, y_tiny, dict(method="adams", rtol=1e-5, atol=1e-5), "adjoint"),
        "conv dopri5 fwd": (conv, y_conv, dict(method="dopri5", rtol=1e-3, atol=1e-3), None),
        "conv dopri5 adjoint": (conv, y_conv, dict(method="dopri5", rtol=1e-3, atol=1e-3), "adjoint"),
        "conv adams adjoint": (conv, y_conv, dict(method="adams", rtol=1e-3, atol=1e-3), "adjoint"),
    }


def solve(func, y0, settings, gradient):
    """The solution, and the gradient of sum(y(1)^2) with respect to y0 (None without grad)."""
    t = torch.tensor([0.0, 1.0])
    if gradient is None:
        with torch.no_grad():
            return odeint(func, y0, t, **settings), None
    y = y0.clone().requires_grad_(True)
    ys = odeint(func, y, t, gradient=gradient, **settings)
    ys[-1].pow(2).sum().backward()
    return ys, y.grad


def main() -> None:
    torch.set_num_threads(1)
    out_path, prefix = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
    results = {}
    for name, (func, y0, settings, gradient) in cases().items():
        if not name.startswith(prefix):
            continue
        func.zero_grad()
        with collect_stats() as stats:
            ys, grad = solve(func, y0, settings, gradient)
        data = ys.detach().numpy().tobytes() + (grad.numpy().tobytes() if grad is not None else b"")
        budget = 3.0 if name.startswith("tiny") else 6.0  # seconds of timed solves, at least 3
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < budget or len(times) < 3:
            begin = time.perf_counter()
            solve(func, y0, settings, gradient)
            times.append(time.perf_counter() - begin)
        results[name] = dict(nfe_forward=stats.nfe_forward, nfe_backward=stats.nfe_backward,
                             accepted=stats.n_accepted, rejected=stats.n_rejected,
                             digest=hashlib.md5(data).hexdigest()[:10], ms=statistics.median(times) * 1e3,
                             runs=len(times))
        print(name, results[name])
    with open(out_path, "w") as out:
        json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
