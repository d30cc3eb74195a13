"""Test problems with exact solutions, shared by the ODE-core tests."""


import torch
from torch import nn

from neuralode.ode import ADAPTIVE_METHODS, FIXED_METHODS, METHODS
from neuralode.ode.solvers.implicit_tableaux import IMPLICIT_TABLEAUX

# Every method in the registry: a method added there is tested here without editing this file.
ALL_METHODS = list(METHODS)
FIXED = list(FIXED_METHODS)
ADAPTIVE = list(ADAPTIVE_METHODS)
ORDER = {name: make().order for name, make in METHODS.items()}
LOW_ORDER = [m for m in ADAPTIVE if ORDER[m] <= 2]  # tight tolerances cost them ~10^4 steps
# Options the shared tests give a method. explicit_adams at torchdiffeq's default max_order=12
# is Adams-Bashforth of order 11, unstable at these step sizes (torchdiffeq's as well): AB5 here.
METHOD_OPTIONS = {"explicit_adams": {"max_order": 6}}
# Multistep methods: their order depends on max_order and the start-up (tests/ode/test_adams.py).
MULTISTEP = [m for m, make in METHODS.items() if getattr(make(), "multistep", False)]
# scipy_solver's solve_ivp chooses its own steps within one of the loop's: no per-step order.
EXTERNAL = ["scipy_solver"]
# Fixed-step implicit methods solve a Newton system at each of the thousands of small steps the
# shared accuracy tests take (1-3 s a test): `make test-fast` checks them on one case each.
IMPLICIT_FIXED = [m for m in FIXED if m in IMPLICIT_TABLEAUX]


class Linear:
    """dy/dt = A y with a damped rotation; y(t) = expm(A t) y0."""

    def __init__(self, dtype=torch.float64):
        self.A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=dtype)
        self.y0 = torch.tensor([[1.0, 0.5], [0.0, -1.0]], dtype=dtype)  # batch of 2 states

    def __call__(self, t, y):
        return y @ self.A.T

    def exact(self, t):
        return torch.stack([self.y0 @ torch.linalg.matrix_exp(self.A.double() * float(s)).T.to(self.A.dtype) for s in t])


class Polynomial:
    """dy/dt = 3 t^2 - 2 t + 1 (time-dependent, state-independent); y = t^3 - t^2 + t + y0."""

    def __init__(self, dtype=torch.float64):
        self.y0 = torch.tensor([0.5, -1.0, 2.0], dtype=dtype)

    def __call__(self, t, y):
        return (3 * t**2 - 2 * t + 1) * torch.ones_like(y)

    def exact(self, t):
        return torch.stack([self.y0 + (s**3 - s**2 + s) for s in t])


class Decay:
    """dy/dt = -k y; y = y0 exp(-k t)."""

    def __init__(self, dtype=torch.float64):
        self.k = torch.tensor([0.5, 1.0, 2.0], dtype=dtype)
        self.y0 = torch.tensor([1.0, 2.0, -1.0], dtype=dtype)

    def __call__(self, t, y):
        return -self.k * y

    def exact(self, t):
        return torch.stack([self.y0 * torch.exp(-self.k * s) for s in t])


class Rotation:
    """dy/dt = (-y2, y1): the unit circle at unit speed."""

    def __init__(self, dtype=torch.float64):
        self.y0 = torch.tensor([1.0, 0.0], dtype=dtype)

    def __call__(self, t, y):
        return torch.stack([-y[1], y[0]])

    def exact(self, t):
        return torch.stack([torch.stack([torch.cos(s), torch.sin(s)]).to(self.y0.dtype) for s in t])


PROBLEMS = {"linear": Linear, "polynomial": Polynomial, "decay": Decay, "rotation": Rotation}


def solver_kwargs(method, dtype):
    """Settings under which each method should be accurate to ``expected_error``."""
    if method in FIXED:
        h = {1: 4e-4, 2: 1e-3, 3: 1e-3}.get(ORDER[method], 1e-2)
        # Outputs between grid points: the cubic Hermite keeps the method's accuracy there
        # (torchdiffeq's default, "linear", is second order).
        return {"options": {"step_size": h, "interp": "cubic", **METHOD_OPTIONS.get(method, {})}}
    tol = 1e-9 if dtype == torch.float64 else 1e-6
    if method in LOW_ORDER:
        # fehlberg2 controls a first-order estimate, so its error runs ~100x its tolerance.
        tol = 1e-8 if method == "fehlberg2" else 1e-6
    return {"rtol": tol, "atol": tol}


def expected_error(method, dtype):
    truncation = {1: 8e-3, 2: 2e-5, 3: 2e-6, 4: 2e-7}[min(ORDER[method], 4)] if method in FIXED else 2e-6
    if method in LOW_ORDER:
        truncation = 1e-4  # their error estimate is first order: tolerance is not accuracy
    return max(truncation, 2e-4) if dtype == torch.float32 else truncation


class SmallField(nn.Module):
    """A small time-dependent MLP field in float64, the same weights every time: for gradient tests."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))
