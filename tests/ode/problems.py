"""Test problems with exact solutions, shared by the ODE-core tests."""


import torch

ALL_METHODS = ["euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5", "dopri8"]
FIXED = ["euler", "midpoint", "heun", "rk4"]
ADAPTIVE = ["bosh3", "dopri5", "tsit5", "dopri8"]
ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "bosh3": 3, "dopri5": 5, "tsit5": 5, "dopri8": 8}


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
        h = {"euler": 1e-4, "midpoint": 1e-3, "heun": 1e-3, "rk4": 1e-2}[method]
        return {"options": {"step_size": h}}
    tol = 1e-9 if dtype == torch.float64 else 1e-6
    return {"rtol": tol, "atol": tol}


def expected_error(method, dtype):
    truncation = {"euler": 2e-3, "midpoint": 2e-5, "heun": 2e-5, "rk4": 2e-7}.get(method, 2e-6)
    return max(truncation, 2e-4) if dtype == torch.float32 else truncation
