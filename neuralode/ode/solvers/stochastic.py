"""Fixed steps of an Ito SDE ``dy = f dt + g dW`` with diagonal noise, as a solver of the one loop
(``sde.py``'s ``sdeint`` hands it the drift as the field and a fixed grid as the controller):

- ``euler``: Euler-Maruyama, ``y + f h + g dW``: strong order 1/2, weak order 1;
- ``milstein``: the derivative-free Milstein scheme for diagonal noise (Kloeden & Platen 1992,
  eq. 11.1.5), ``y + f h + g dW + (g(y + g sqrt(h)) - g) (dW^2 - h) / (2 sqrt(h))``: strong
  order 1. Where ``g`` does not depend on ``y`` (additive noise) it is Euler-Maruyama.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from neuralode.ode.problem import CALLBACKS
from neuralode.ode.solvers.base import Solver

SDE_ORDERS = {"euler": 0.5, "milstein": 1.0}  # strong orders


@dataclass
class StochasticStep:
    y1: torch.Tensor
    stages: torch.Tensor  # the drift at the step's start, as a one-row stack


class StochasticSolver(Solver):
    """One method of ``SDE_ORDERS``. ``diffusion(s, y)`` is ``g`` in solver time and
    ``increments(s, e, y)`` the Brownian increment ``W(e) - W(s)`` in the state's shape."""

    adaptive = False
    callbacks = CALLBACKS[:1]
    step_size_option = "dt"

    def __init__(self, method: str, diffusion: Callable, increments: Callable):
        self.name, self.order, self.error_order = method, SDE_ORDERS[method], 1
        self.diffusion, self.increments = diffusion, increments

    def init(self, field, t: float, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        return field(t, y)

    def next_init(self, field, t1: float, step: StochasticStep, perturb: int = 0) -> torch.Tensor:
        return field(t1, step.y1)

    def step(self, field, t: float, y: torch.Tensor, h: float, drift: torch.Tensor,
             perturb_end: bool = False) -> StochasticStep:
        dw = self.increments(t, t + h, y)
        gy = self.diffusion(t, y)
        y1 = y + drift * h + gy * dw
        if self.name == "milstein":
            root = math.sqrt(h)
            support = self.diffusion(t, y + gy * root)  # g g' ~ (g(y + g sqrt h) - g) / sqrt h
            y1 = y1 + (support - gy) * (dw * dw - h) / (2 * root)
        return StochasticStep(y1, drift.unsqueeze(0))

    def error_norm(self, step, h, scale, norm):
        raise NotImplementedError("an SDE step on a fixed grid has no error estimate")

    def interpolant(self, field, t, h, y0, step, f1):
        raise NotImplementedError("an SDE solution has no dense output between grid points")
