"""The RNN baseline of the paper's Table 2: an RNN with the time gap as an extra input.

At every step the cell reads the last observed value and the gap to the time being predicted,
and a linear readout gives the predicted mean there. Predicting at any time after the last
observation therefore takes one extra cell step; extrapolation feeds each prediction back in
(autoregressively). Series follow the batch format of :mod:`neuralode.data.spirals`.

With ``time_gap=False`` the cell reads the last value alone: the paper's first baseline, which
cannot know how far ahead it is asked to predict (its second version reads the gap too).

With ``residual=True`` the readout predicts the change from the last observed value rather
than the value itself: the same 25-unit network and inputs, but the identity map (hold the
last value) is where training starts, which suits smooth trajectories sampled densely.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neuralode.models.latent_ode import check_series, gaussian_log_likelihood, make_cell
from neuralode.models.mlp import check_widths


@dataclass
class FilterState:
    """What the RNN knows after each observation: (B, T+1, ...), entry 0 = before any."""

    hidden: torch.Tensor  # (B, T+1, H)
    last_value: torch.Tensor  # (B, T+1, D) the latest real observation (zeros before any)
    last_time: torch.Tensor  # (B, T+1) its time (0 before any)


class RNNBaseline(nn.Module):
    """A 25-unit RNN trained on the Gaussian negative log-likelihood of its next-step predictions
    (``cell``: ``rnn``, the paper's plain tanh cell, or ``gru``)."""

    def __init__(self, obs_dim: int = 2, hidden: int = 25, obs_std: float = 0.1, cell: str = "gru",
                 residual: bool = False, time_gap: bool = True):
        super().__init__()
        if obs_std <= 0:
            raise ValueError(f"obs_std must be positive, got {obs_std}")
        check_widths(obs_dim=obs_dim, hidden=hidden)
        self.cell = make_cell(cell, obs_dim + int(time_gap), hidden)
        self.readout = nn.Linear(hidden, obs_dim)
        self.obs_std = obs_std
        self.residual = residual
        self.time_gap = time_gap

    def step(self, h: torch.Tensor, value: torch.Tensor, gap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One cell step from state ``h`` given the last value and the gap ahead: (new h, predicted mean)."""
        h = self.cell(torch.cat([value, gap[..., None]], dim=-1) if self.time_gap else value, h)
        pred = self.readout(h)
        return h, (value + pred if self.residual else pred)

    def filter(self, values: torch.Tensor, times: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, FilterState]:
        """One-step-ahead predicted means at the observation times (B, T, D), and the states."""
        check_series(values, times, mask)
        batch, _, obs_dim = values.shape
        h = values.new_zeros(batch, self.cell.hidden_size)
        last_value = values.new_zeros(batch, obs_dim)
        last_time = times.new_zeros(batch)
        states, preds = [(h, last_value, last_time)], []
        for k in range(values.shape[1]):
            h_new, pred = self.step(h, last_value, times[:, k] - last_time)
            real = mask[:, k]
            h = torch.where(real[:, None], h_new, h)
            last_value = torch.where(real[:, None], values[:, k], last_value)
            last_time = torch.where(real, times[:, k], last_time)
            states.append((h, last_value, last_time))
            preds.append(pred)
        hidden, last_values, last_times = (torch.stack(s, dim=1) for s in zip(*states))
        return torch.stack(preds, dim=1), FilterState(hidden, last_values, last_times)

    def nll(self, values: torch.Tensor, times: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Gaussian negative log-likelihood of the observations under the one-step predictions: (B,)."""
        preds, _ = self.filter(values, times, mask)
        return -gaussian_log_likelihood(values, preds, self.obs_std, mask)

    def predict_at(self, values: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, query_times: torch.Tensor) -> torch.Tensor:
        """Predicted means (B, Q, D) at query times (B, Q), each from the observations strictly before it."""
        _, state = self.filter(values, times, mask)
        # Number of observations strictly before each query = index into the (T+1) states.
        # Padding repeats the last real time, and the states do not change over padding.
        idx = torch.searchsorted(times.contiguous(), query_times.contiguous(), right=False)
        h = torch.gather(state.hidden, 1, idx[..., None].expand(-1, -1, state.hidden.shape[-1]))
        value = torch.gather(state.last_value, 1, idx[..., None].expand(-1, -1, state.last_value.shape[-1]))
        gap = query_times - torch.gather(state.last_time, 1, idx)
        _, pred = self.step(h.flatten(0, 1), value.flatten(0, 1), gap.flatten())
        return pred.view(*query_times.shape, -1)

    def extrapolate(self, values: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, query_times: torch.Tensor) -> torch.Tensor:
        """Autoregressive predictions (B, Q, D) at sorted times after the last observation."""
        _, state = self.filter(values, times, mask)
        h, value, last_time = state.hidden[:, -1], state.last_value[:, -1], state.last_time[:, -1]
        if (query_times < last_time[:, None]).any():
            raise ValueError("extrapolation times must not precede the last observation")
        preds = []
        for k in range(query_times.shape[1]):
            h, value = self.step(h, value, query_times[:, k] - last_time)
            last_time = query_times[:, k]
            preds.append(value)
        return torch.stack(preds, dim=1)
