"""Latent ODE with a Poisson process likelihood on event times (the paper's Figure 7).

The event rate is ``lambda(z(t))``, a small network of the latent state. For events
``t_1..t_N`` in ``[0, t_end]``::

    log p(t_1..t_N) = sum_i log lambda(z(t_i)) - integral_0^t_end lambda(z(t)) dt

The integral is one more state, ``Lambda' = lambda(z)``, integrated in the same ODE solve as
the latent state (the state is ``[z, Lambda]`` concatenated). Events follow the batch format
of :mod:`neuralode.data.irregular` with ``values`` of shape (B, T, 0) (an event has no value)
and ``mask`` marking real events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from neuralode.models.latent_ode import RecognitionRNN, kl_standard_normal, mlp, sample_z0, solve_at
from neuralode.models.mlp import check_widths
from neuralode.ode.settings import SolverSettings


class IntensityDynamics(nn.Module):
    """d[z, Lambda]/dt = [f(z), lambda(z)]: the latent field and the accumulated rate."""

    def __init__(self, latent_dim: int, dynamics_hidden: int, rate_hidden: int, activation: str = "elu"):
        super().__init__()
        self.field = mlp(latent_dim, dynamics_hidden, latent_dim, activation)
        self.rate_net = mlp(latent_dim, rate_hidden, 1, activation)

    def rate(self, z: torch.Tensor) -> torch.Tensor:
        """lambda(z) > 0, shape z.shape[:-1]."""
        return F.softplus(self.rate_net(z)).squeeze(-1)

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        z = state[..., :-1]
        return torch.cat([self.field(z), self.rate(z)[..., None]], dim=-1)


@dataclass
class PoissonOutput:
    mean: torch.Tensor  # (B, L) posterior mean of z0
    logvar: torch.Tensor  # (B, L)
    log_likelihood: torch.Tensor  # (B,) Poisson process log-likelihood of the events
    rates: list[torch.Tensor]  # (B, T_i) lambda at each of the query times


class PoissonLatentODE(nn.Module):
    """Recognition RNN over the event gaps -> z0 -> ODE of [z, Lambda] -> Poisson likelihood."""

    def __init__(
        self,
        latent_dim: int = 4,
        rnn_hidden: int = 25,
        dynamics_hidden: int = 20,
        rate_hidden: int = 20,
        cell: str = "gru",
        activation: str = "elu",
        solver: SolverSettings | Mapping | None = None,
    ):
        super().__init__()
        check_widths(latent_dim=latent_dim, rnn_hidden=rnn_hidden, dynamics_hidden=dynamics_hidden,
                     rate_hidden=rate_hidden)
        self.encoder = RecognitionRNN(0, latent_dim, rnn_hidden, cell)
        self.dynamics = IntensityDynamics(latent_dim, dynamics_hidden, rate_hidden, activation)
        self.solver = SolverSettings.from_any(solver)

    def forward(
        self,
        times: torch.Tensor,
        mask: torch.Tensor,
        t_end: torch.Tensor,
        query_times: Sequence[torch.Tensor] = (),
        sample: bool = True,
    ) -> PoissonOutput:
        """Event times (B, T) with mask, window ends (B,), optional times (B, T_i) to read lambda at."""
        values = times.new_zeros(*times.shape, 0)
        mean, logvar = self.encoder(values, times, mask)
        z0 = sample_z0(mean, logvar, sample)
        state0 = torch.cat([z0, z0.new_zeros(len(z0), 1)], dim=-1)  # Lambda(0) = 0
        at_events, at_end, *at_queries = solve_at(self.dynamics, state0, [times, t_end[:, None], *query_times], self.solver)
        log_rates = torch.log(self.dynamics.rate(at_events[..., :-1]).clamp_min(1e-12))  # softplus can underflow
        log_likelihood = (log_rates * mask).sum(-1) - at_end[:, 0, -1]
        rates = [self.dynamics.rate(s[..., :-1]) for s in at_queries]
        return PoissonOutput(mean, logvar, log_likelihood, rates)

    def elbo(self, out: PoissonOutput) -> torch.Tensor:
        """One-sample ELBO per sequence, shape (B,)."""
        return out.log_likelihood - kl_standard_normal(out.mean, out.logvar)
