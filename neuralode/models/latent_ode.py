"""Latent ODE for irregularly sampled time series (the paper's Section 5, Figure 6).

A recognition RNN reads the observations backwards in time and gives q(z0 | x); z0 is
integrated by a neural ODE to every requested time; a decoder maps each latent state to data
space. Training maximises the ELBO. Series follow the batch format of
:mod:`neuralode.data.irregular`: ``times (B, T)``, ``values (B, T, D)``, ``mask (B, T)``, with
time 0 the reference time at which z0 lives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from neuralode.models.mlp import check_widths
from neuralode.ode.settings import SolverSettings, solve

ACTIVATIONS = {"elu": nn.ELU, "tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}


def mlp(in_dim: int, hidden: int, out_dim: int, activation: str = "elu", layers: int = 1) -> nn.Sequential:
    """``layers`` hidden layers of ``hidden`` units: Linear -> activation -> ... -> Linear."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    sizes = [in_dim] + [hidden] * layers
    modules: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        modules += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*modules, nn.Linear(hidden, out_dim))


def make_cell(kind: str, input_size: int, hidden: int) -> nn.Module:
    """A GRU or plain tanh RNN cell."""
    if kind == "gru":
        return nn.GRUCell(input_size, hidden)
    if kind == "rnn":
        return nn.RNNCell(input_size, hidden)
    raise ValueError(f"cell must be 'gru' or 'rnn', got {kind!r}")


def check_series(values: torch.Tensor, times: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise a clear error if a batch does not follow the irregular-series format."""
    if values.dim() != 3 or times.shape != values.shape[:2] or mask.shape != times.shape:
        raise ValueError(
            "expected values (B, T, D), times (B, T) and mask (B, T); got "
            f"{tuple(values.shape)}, {tuple(times.shape)} and {tuple(mask.shape)}"
        )
    if (times < 0).any():
        raise ValueError("observation times must be >= 0 (time 0 is where z0 lives); shift the series")
    if (times[:, 1:] < times[:, :-1]).any():
        raise ValueError("observation times must be sorted in each series (padding repeats the last time)")


class RecognitionRNN(nn.Module):
    """Reads ``[x_k, t_k - t_{k-1}]`` from the last observation back to the first (t_0 = 0)
    and maps the final hidden state to the mean and log-variance of q(z0)."""

    def __init__(self, obs_dim: int, latent_dim: int = 4, hidden: int = 25, cell: str = "gru"):
        super().__init__()
        self.cell = make_cell(cell, obs_dim + 1, hidden)
        self.to_posterior = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, values: torch.Tensor, times: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_series(values, times, mask)
        # The gap to the previous observation; the first one's gap is its distance from t = 0,
        # which is the last thing the backwards pass sees before emitting z0.
        gaps = torch.diff(times, dim=1, prepend=torch.zeros_like(times[:, :1]))
        inputs = torch.cat([values, gaps[..., None]], dim=-1)
        h = values.new_zeros(values.shape[0], self.cell.hidden_size)
        for k in reversed(range(values.shape[1])):
            h = torch.where(mask[:, k, None], self.cell(inputs[:, k], h), h)  # padding leaves h alone
        mean, logvar = self.to_posterior(h).chunk(2, dim=-1)
        return mean, logvar


class LatentDynamics(nn.Module):
    """Autonomous latent vector field dz/dt = f(z), an MLP with ``layers`` hidden layers."""

    def __init__(self, latent_dim: int = 4, hidden: int = 20, activation: str = "elu", layers: int = 1):
        super().__init__()
        self.net = mlp(latent_dim, hidden, latent_dim, activation, layers)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def solve_at(
    func: nn.Module, y0: torch.Tensor, times: Sequence[torch.Tensor], solver: SolverSettings | Mapping
) -> list[torch.Tensor]:
    """Integrate ``y0`` (B, S) from t = 0 once, on the sorted union of all ``times`` (each (B, T_i)),
    and return the state of each series at its own times, one (B, T_i, S) tensor per entry."""
    flat = torch.cat([t.reshape(-1) for t in times])
    if (flat < 0).any():
        raise ValueError("requested times must be >= 0: the ODE starts at t = 0")
    union = torch.unique(torch.cat([flat.new_zeros(1), flat]))  # sorted, strictly increasing
    if len(union) == 1:  # every requested time is 0
        ys = y0[None]
    else:
        ys = solve(solver, func, y0, union)  # (U, B, S)
    ys = ys.transpose(0, 1)  # (B, U, S)
    out = []
    for t in times:
        idx = torch.searchsorted(union, t.contiguous())  # exact positions: t is in the union
        out.append(torch.gather(ys, 1, idx[..., None].expand(-1, -1, ys.shape[-1])))
    return out


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std: float, mask: torch.Tensor) -> torch.Tensor:
    """log N(x | mean, std^2 I) summed over the real observations of each series: shape (B,)."""
    per_point = -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    return (per_point.sum(-1) * mask).sum(-1)


def sample_z0(mean: torch.Tensor, logvar: torch.Tensor, sample: bool = True) -> torch.Tensor:
    """Reparameterised draw from q(z0 | x) = N(mean, exp(logvar)), or its mean when ``sample`` is False."""
    return mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean


def kl_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per series: shape (B,)."""
    return 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).sum(-1)


@dataclass
class LatentODEOutput:
    """What one encode-solve-decode pass produces."""

    mean: torch.Tensor  # (B, L) posterior mean of z0
    logvar: torch.Tensor  # (B, L) posterior log-variance of z0
    z0: torch.Tensor  # (B, L) the z0 that was integrated (a sample, or the mean)
    recon: torch.Tensor  # (B, T, D) decoded at the observation times
    latents: list[torch.Tensor]  # (B, T_i, L) latent states at each of the query times
    preds: list[torch.Tensor]  # (B, T_i, D) decoded at each of the query times


class LatentODE(nn.Module):
    """The latent ODE VAE: recognition RNN -> z0 -> ODE -> decoder.

    The defaults are the paper's spiral model: a 25-unit RNN encoder, a 4-D latent, 20 hidden
    units in the dynamics and in the decoder. ``obs_std`` is the fixed std of the Gaussian
    observation likelihood. ``dynamics_layers`` is 1, as in the paper's Section 5.1; the authors'
    torchdiffeq example uses 2 (a labelled variant in Table 2).
    """

    def __init__(
        self,
        obs_dim: int = 2,
        latent_dim: int = 4,
        rnn_hidden: int = 25,
        dynamics_hidden: int = 20,
        decoder_hidden: int = 20,
        obs_std: float = 0.1,
        cell: str = "gru",
        activation: str = "elu",
        solver: SolverSettings | Mapping | None = None,
        dynamics_layers: int = 1,
    ):
        super().__init__()
        if obs_std <= 0:
            raise ValueError(f"obs_std must be positive, got {obs_std}")
        check_widths(obs_dim=obs_dim, latent_dim=latent_dim, rnn_hidden=rnn_hidden, dynamics_hidden=dynamics_hidden,
                     decoder_hidden=decoder_hidden, dynamics_layers=dynamics_layers)
        self.encoder = RecognitionRNN(obs_dim, latent_dim, rnn_hidden, cell)
        self.dynamics = LatentDynamics(latent_dim, dynamics_hidden, activation, dynamics_layers)
        self.decoder = mlp(latent_dim, decoder_hidden, obs_dim, "relu")
        self.obs_std = obs_std
        self.solver = SolverSettings.from_any(solver)

    def latent_trajectories(self, z0: torch.Tensor, times: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """z(t) for each tensor of times (B, T_i), with one ODE solve for all of them."""
        return solve_at(self.dynamics, z0, times, self.solver)

    def forward(
        self,
        values: torch.Tensor,
        times: torch.Tensor,
        mask: torch.Tensor,
        query_times: Sequence[torch.Tensor] = (),
        sample: bool = True,
    ) -> LatentODEOutput:
        """Encode the observations, then decode at them and at each of ``query_times``."""
        mean, logvar = self.encoder(values, times, mask)
        z0 = sample_z0(mean, logvar, sample)
        latents = self.latent_trajectories(z0, [times, *query_times])
        decoded = [self.decoder(z) for z in latents]
        return LatentODEOutput(mean, logvar, z0, decoded[0], latents[1:], decoded[1:])

    def elbo(self, values: torch.Tensor, mask: torch.Tensor, out: LatentODEOutput) -> torch.Tensor:
        """One-sample ELBO per series, shape (B,): log p(x | z0) - KL(q(z0 | x) || N(0, I))."""
        return gaussian_log_likelihood(values, out.recon, self.obs_std, mask) - kl_standard_normal(out.mean, out.logvar)
