"""Bi-directional 2-D spirals observed at irregular times (the paper's Section 5).

The two spiral curves are those of the authors' latent ODE example: a counter-clockwise
spiral ``r = b * z`` centred at ``(+5, 0)`` and a clockwise one ``r = 50 b / z'`` centred at
``(-5, 0)``, both over a curve parameter of length ``6 pi``. Every spiral is a window of
``n_points + n_extrap`` equally spaced points (spacing ``dt``) starting at a random place on
one of the two curves; exactly half of the spirals are clockwise.

Items follow the irregular-series format of :mod:`neuralode.data.irregular` (``times``,
``values``, ``mask``); spirals have the same number of observations in every series, so
their mask is all True. They add the noise-free truth::

    interp_times (B, P), interp_values (B, P, 2)  the whole observed window (P = n_points)
    extrap_times (B, E), extrap_values (B, E, 2)  the E = n_extrap points that follow it
    direction    (B,)                             +1 counter-clockwise, -1 clockwise
    curve_start  (B,)                             where the window starts on its curve (z)

Window starts are uniform over the places where they fit. An evaluation spiral needs its
``n_extrap`` points after the window, so its window starts where both fit, as in the authors'
example. If every spiral started that way, no window would observe the curve's last
``n_extrap`` points, and a test spiral extrapolating there would be asked about a part of the
curve no training spiral showed. So by default a training spiral's window starts wherever the
window alone fits (``n_extrapolated``: which spirals need the extrapolated points to fit), and
its extrapolation targets that run past the curve's end are NaN: there is no curve there.
"""

from __future__ import annotations

import math

import torch

from neuralode.data.irregular import GeneratedSplitDataModule

CURVE_LENGTH = 6 * math.pi  # length of the curve parameter z, as in the reference example


def spiral_points(z_start: torch.Tensor, t: torch.Tensor, clockwise: torch.Tensor, b: float = 0.3) -> torch.Tensor:
    """Noise-free spiral positions, shape ``(N, len(t), 2)``.

    ``z_start`` (N,) is where each window starts on its curve, ``t`` the times relative to
    that start, ``clockwise`` (N,) bool picks the curve.
    """
    z = z_start[:, None] + t[None, :]
    # Counter-clockwise: angle and radius grow together.
    r_ccw = b * z
    ccw = torch.stack([r_ccw * torch.cos(z) + 5.0, r_ccw * torch.sin(z)], dim=-1)
    # Clockwise: the angle runs down from 6 pi + 1 to 1 while the radius grows as 1 / angle.
    z_cw = CURVE_LENGTH + 1.0 - z
    r_cw = b * 50.0 / z_cw
    cw = torch.stack([r_cw * torch.cos(z_cw) - 5.0, r_cw * torch.sin(z_cw)], dim=-1)
    return torch.where(clockwise[:, None, None], cw, ccw)


def make_spirals(
    n_spirals: int = 1000,
    n_points: int = 100,
    n_extrap: int = 100,
    n_obs: int = 100,
    dt: float = 0.03,
    noise_std: float = 0.1,
    seed: int = 0,
    n_extrapolated: int | None = None,
) -> dict[str, torch.Tensor]:
    """Generate the spiral data set in the irregular-series format above (float32).

    Each spiral's observed window of ``n_points`` grid points is subsampled without
    replacement to ``n_obs`` sorted irregular times; the ``n_extrap`` grid points after the
    window are held out (noise-free) for extrapolation. The last ``n_extrapolated`` spirals
    (all of them when None) start where those points fit on the curve too; the others start
    anywhere their window fits. Same arguments, same tensors.
    """
    if n_spirals < 2:
        raise ValueError(f"n_spirals must be at least 2 (half clockwise, half not), got {n_spirals}")
    if n_points < 1 or n_extrap < 0:
        raise ValueError(f"n_points must be >= 1 and n_extrap >= 0, got {n_points} and {n_extrap}")
    if not 1 <= n_obs <= n_points:
        raise ValueError(f"n_obs must lie in [1, n_points={n_points}], got {n_obs}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    n_extrapolated = n_spirals if n_extrapolated is None else n_extrapolated
    if not 0 <= n_extrapolated <= n_spirals:
        raise ValueError(f"n_extrapolated must lie in [0, n_spirals={n_spirals}], got {n_extrapolated}")
    window = (n_points + n_extrap - 1) * dt
    if dt <= 0 or window >= CURVE_LENGTH:
        raise ValueError(
            f"dt={dt} must be positive and (n_points + n_extrap - 1) * dt = {window:.3g} shorter "
            f"than the curve ({CURVE_LENGTH:.3g}); lower dt or the number of points"
        )

    gen = torch.Generator().manual_seed(seed)
    clockwise = torch.arange(n_spirals) < n_spirals // 2
    clockwise = clockwise[torch.randperm(n_spirals, generator=gen)]
    # The room a window's start has: the curve less the window, with or without its extrapolation.
    room = torch.full((n_spirals,), CURVE_LENGTH - (n_points - 1) * dt, dtype=torch.float64)
    room[n_spirals - n_extrapolated:] = CURVE_LENGTH - window
    z_start = torch.rand(n_spirals, generator=gen, dtype=torch.float64) * room
    grid = torch.arange(n_points + n_extrap, dtype=torch.float64) * dt
    clean = spiral_points(z_start, grid, clockwise)
    # Only a training spiral's extrapolated points can pass the end (the slack absorbs rounding).
    past_end = z_start[:, None] + grid[None, :] > CURVE_LENGTH + 1e-9
    past_end[:, :n_points] = False
    clean = clean.masked_fill(past_end[..., None], math.nan)
    noisy = clean[:, :n_points] + noise_std * torch.randn(n_spirals, n_points, 2, generator=gen, dtype=torch.float64)

    # Without replacement: the first n_obs entries of a random permutation, then sorted.
    obs_idx = torch.rand(n_spirals, n_points, generator=gen).argsort(dim=1)[:, :n_obs].sort(dim=1).values
    grid, clean, noisy = grid.float(), clean.float(), noisy.float()
    return {
        "times": grid[obs_idx],
        "values": torch.gather(noisy, 1, obs_idx[..., None].expand(-1, -1, 2)),
        "mask": torch.ones(n_spirals, n_obs, dtype=torch.bool),
        "interp_times": grid[:n_points].expand(n_spirals, -1).clone(),
        "interp_values": clean[:, :n_points],
        "extrap_times": grid[n_points:].expand(n_spirals, -1).clone(),
        "extrap_values": clean[:, n_points:],
        "direction": torch.where(clockwise, -1, 1),
        "curve_start": z_start.float(),
    }


class SpiralDataModule(GeneratedSplitDataModule):
    """Spirals split into ``n_spirals - n_eval`` training and ``n_eval`` evaluation series.

    ``n_obs`` (the paper's n in {30, 50, 100}) observed points per spiral, noise of std
    ``noise_std`` on the observations; targets for interpolation/extrapolation are noise-free.
    ``train_on_whole_curve``: training windows start anywhere they fit, so that together they
    observe all of both curves (False: only where their extrapolated points fit too, as in the
    authors' example, which leaves the curves' ends unobserved).
    """

    def __init__(
        self,
        n_obs: int = 100,
        noise_std: float = 0.1,
        seed: int = 0,
        n_spirals: int = 1000,
        n_eval: int = 200,
        n_points: int = 100,
        n_extrap: int = 100,
        dt: float = 0.03,
        train_on_whole_curve: bool = True,
        batch_size: int = 50,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ):
        spiral_args = dict(
            n_spirals=n_spirals, n_points=n_points, n_extrap=n_extrap, n_obs=n_obs,
            dt=dt, noise_std=noise_std, seed=seed, n_extrapolated=n_eval if train_on_whole_curve else None,
        )
        super().__init__(make_spirals, spiral_args, "n_spirals", n_eval, batch_size, eval_batch_size, num_workers)
        # make_spirals checks these too, but only when the data is first generated, mid-run.
        if not 1 <= n_obs <= n_points:
            raise ValueError(f"data.n_obs must lie in [1, data.n_points={n_points}], got {n_obs}")
        if not noise_std >= 0:
            raise ValueError(f"data.noise_std must be >= 0, got {noise_std}")
        if not (dt > 0 and (n_points + n_extrap - 1) * dt < CURVE_LENGTH):
            raise ValueError(f"data.dt={dt} must be positive and (n_points + n_extrap - 1) * dt shorter than the "
                             f"curve ({CURVE_LENGTH:.3g}); lower data.dt or the number of points")
