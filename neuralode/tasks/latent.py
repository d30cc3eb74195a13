"""Tasks of the paper's Section 5: latent ODE and RNN on spirals, Poisson process on events.

Batches are dicts in the irregular-series format of :mod:`neuralode.data.irregular`. RMSEs are
measured against the noise-free truth: ``rmse_interp`` on the whole observed window (observed
and unobserved grid points), ``rmse_extrap`` on the points after it. Each is the mean over
series of the per-series RMSE, so that the trainer's size-weighted average over batches is
exactly the mean over the evaluation set.
"""

from __future__ import annotations

import math

import torch
from matplotlib.figure import Figure
from torch import nn

from neuralode.models.latent_ode import LatentODE
from neuralode.models.poisson import PoissonLatentODE, PoissonOutput
from neuralode.models.rnn_baseline import RNNBaseline
from neuralode.tasks.base import Task


def rmse_per_series(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root mean squared error over the points and dimensions of each series: (B, T, D) -> (B,)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return (pred - target).pow(2).mean(dim=(1, 2)).sqrt()


def masked_rmse(pred: torch.Tensor, target: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
    """RMSE per series over the points where ``points`` (B, T) is True (all: None): (B, T, D) -> (B,)."""
    if points is None:
        return rmse_per_series(pred, target)
    if pred.shape != target.shape or points.shape != pred.shape[:2]:
        raise ValueError(f"prediction {tuple(pred.shape)}, target {tuple(target.shape)} and points "
                         f"{tuple(points.shape)} do not match")
    squared = (pred - target).pow(2).mean(-1) * points
    return (squared.sum(1) / points.sum(1).clamp(min=1)).sqrt()


def noisy_targets(values: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    """``values`` plus fresh Gaussian noise of ``std``, the same for the same seed on any device."""
    generator = torch.Generator().manual_seed(seed)
    return values + std * torch.randn(values.shape, generator=generator, dtype=values.dtype).to(values.device)


#: Table 2's readings of "predictive RMSE on 100 time points": the points after the window, the
#: first of them up to torchdiffeq's example's horizon, and the window's own grid points.
READINGS = ("extrap", "extrap_example", "window")
#: The torchdiffeq example's 100 points span 99 steps of 6 pi / 999 = 1.87 rad.
EXAMPLE_SPAN = 99 * 6 * math.pi / 999


def example_horizon(dt: float) -> int:
    """Grid points after the window, ``dt`` apart, that cover the example's 1.87 rad (62 at dt = 0.03)."""
    return max(1, round(EXAMPLE_SPAN / dt))


def scored_window(batch: dict) -> torch.Tensor:
    """The window's grid points (B, P) after each series' first observation: the RNN has no
    prediction before it (its state is empty), so neither model is scored there."""
    return batch["interp_times"] > batch["times"][:, :1]


@torch.no_grad()
def spiral_scores(task: "SpiralTask", batch: dict, noise_std: float, dt: float, seed: int = 0,
                  samples: int = 8, mean: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per-series RMSE (B,) under every reading, target and decoding: keys ``reading/target/decode``.

    reading: ``extrap`` the points after the window, ``extrap_example`` the first
    :func:`example_horizon` of them, ``window`` the window's grid points after the series' first
    observation (the RNN has no prediction before it: its state is empty). target: ``clean``
    (noise-free) or ``noisy`` (fresh noise of ``noise_std`` drawn from ``seed``). decode: ``mean``
    (the posterior mean of z0; the RNN's predictions) or, for a model with a latent, ``sample``
    (the mean RMSE over ``samples`` draws of z0 from the posterior, as in the paper's Figure 8).
    ``mean``: ``task.predict(batch)``, when the caller has it already.
    """
    window = scored_window(batch)
    horizon = example_horizon(dt)
    targets = {"clean": (batch["interp_values"], batch["extrap_values"]),
               "noisy": (noisy_targets(batch["interp_values"], noise_std, seed),
                         noisy_targets(batch["extrap_values"], noise_std, seed + 1))}
    decodes = {"mean": [task.predict(batch) if mean is None else mean]}
    if task.stochastic:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            decodes["sample"] = [task.predict(batch, sample=True) for _ in range(samples)]
    scores = {}
    for target, (window_target, extrap_target) in targets.items():
        for decode, draws in decodes.items():
            per_draw = {reading: [] for reading in READINGS}
            for interp, extrap in draws:
                per_draw["extrap"].append(masked_rmse(extrap, extrap_target))
                per_draw["extrap_example"].append(masked_rmse(extrap[:, :horizon], extrap_target[:, :horizon]))
                per_draw["window"].append(masked_rmse(interp, window_target, window))
            for reading, values in per_draw.items():
                scores[f"{reading}/{target}/{decode}"] = torch.stack(values).mean(0)
    return scores


def plot_spirals(batch: dict, preds: dict[str, tuple[torch.Tensor, torch.Tensor]], n_series: int = 4) -> Figure:
    """Observed points, true trajectory and each model's (interp, extrap) prediction for a few series."""
    n = min(n_series, len(batch["times"]))
    fig = Figure(figsize=(3.2 * n, 3.2))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, ax in enumerate(axes):
        truth = torch.cat([batch["interp_values"][i], batch["extrap_values"][i]]).cpu()
        ax.plot(truth[:, 0], truth[:, 1], color="0.6", lw=1, label="truth")
        for name, (interp, extrap) in preds.items():
            line = ax.plot(interp[i, :, 0].cpu(), interp[i, :, 1].cpu(), lw=1.5, label=f"{name} (window)")
            ax.plot(extrap[i, :, 0].cpu(), extrap[i, :, 1].cpu(), lw=1.5, ls="--", color=line[0].get_color(), label=f"{name} (extrapolation)")
        obs = batch["values"][i][batch["mask"][i]].cpu()
        ax.scatter(obs[:, 0], obs[:, 1], s=8, color="k", zorder=3, label="observed")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def observed(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The observed series of a batch, in the order the models take them: values, times, mask."""
    return batch["values"], batch["times"], batch["mask"]


class SpiralTask(Task):
    """What the spiral tasks share: the monitor, the RMSEs of :meth:`predict` and its figure."""

    monitor = "rmse_extrap"
    monitor_mode = "min"
    label = "model"  # the net's name in the figure legend
    stochastic = False  # whether predict(sample=True) draws from a posterior

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def predict(self, batch: dict, sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions at ``interp_times`` (B, P, D) and at ``extrap_times`` (B, E, D); with
        ``sample``, from one draw of the posterior (a model without one ignores it)."""
        raise NotImplementedError

    def rmses(self, batch: dict) -> dict[str, float]:
        """Mean per-series RMSE against the noise-free truth on the window and after it."""
        interp, extrap = self.predict(batch)
        return {
            "rmse_interp": rmse_per_series(interp, batch["interp_values"]).mean().item(),
            "rmse_extrap": rmse_per_series(extrap, batch["extrap_values"]).mean().item(),
        }

    @torch.no_grad()
    def figures(self, batch: dict) -> dict[str, Figure]:
        return {"reconstructions": plot_spirals(batch, {self.label: self.predict(batch)})}


class LatentODETask(SpiralTask):
    """Latent ODE on spirals: loss = -ELBO per series (one z0 sample), averaged over the batch."""

    net: LatentODE
    label = "latent ODE"
    stochastic = True

    def elbo(self, batch: dict) -> torch.Tensor:
        """One-sample ELBO per series, shape (B,)."""
        return self.net.elbo(batch["values"], batch["mask"], self.net(*observed(batch)))

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        elbo = self.elbo(batch)
        return {"loss": -elbo.mean(), "elbo": elbo.mean().detach()}

    def predict(self, batch: dict, sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded trajectories on the window and after it, from the posterior mean of z0 (or a draw)."""
        out = self.net(*observed(batch), [batch["interp_times"], batch["extrap_times"]], sample=sample)
        return out.preds[0], out.preds[1]

    @torch.no_grad()
    def evaluation_step(self, batch: dict) -> dict[str, float]:
        elbo = self.elbo(batch)
        return {"loss": -elbo.mean().item(), "elbo": elbo.mean().item(), **self.rmses(batch), "n": len(elbo)}


class RNNTask(SpiralTask):
    """RNN baseline on spirals: loss = Gaussian NLL of the one-step predictions per series."""

    net: RNNBaseline
    label = "RNN"

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": self.net.nll(*observed(batch)).mean()}

    def predict(self, batch: dict, sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions on the window (from earlier observations) and autoregressively after it."""
        series = observed(batch)
        return self.net.predict_at(*series, batch["interp_times"]), self.net.extrapolate(*series, batch["extrap_times"])

    @torch.no_grad()
    def evaluation_step(self, batch: dict) -> dict[str, float]:
        nll = self.net.nll(*observed(batch))
        return {"loss": nll.mean().item(), **self.rmses(batch), "n": len(nll)}


class PoissonTask(Task):
    """Poisson process latent ODE on event times: loss = -ELBO per sequence."""

    monitor = "loss"
    monitor_mode = "min"

    def __init__(self, net: PoissonLatentODE):
        super().__init__()
        self.net = net

    def output_and_elbo(self, batch: dict) -> tuple[PoissonOutput, torch.Tensor]:
        """The model's output on the batch's events and the one-sample ELBO per sequence (B,)."""
        out = self.net(batch["times"], batch["mask"], batch["t_end"])
        return out, self.net.elbo(out)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        out, elbo = self.output_and_elbo(batch)
        return {"loss": -elbo.mean(), "log_likelihood": out.log_likelihood.mean().detach()}

    def rates(self, batch: dict) -> torch.Tensor:
        """The learned rate on the batch's grid (B, G), from the posterior mean of z0."""
        out = self.net(batch["times"], batch["mask"], batch["t_end"], [batch["grid_times"]], sample=False)
        return out.rates[0]

    @torch.no_grad()
    def evaluation_step(self, batch: dict) -> dict[str, float]:
        out, elbo = self.output_and_elbo(batch)
        rate_rmse = rmse_per_series(self.rates(batch)[..., None], batch["true_rate"][..., None])
        return {
            "loss": -elbo.mean().item(),
            "log_likelihood": out.log_likelihood.mean().item(),
            "rate_rmse": rate_rmse.mean().item(),
            "n": len(elbo),
        }

    @torch.no_grad()
    def figures(self, batch: dict, n_series: int = 4) -> dict[str, Figure]:
        rates = self.rates(batch).cpu()
        n = min(n_series, len(rates))
        fig = Figure(figsize=(6, 1.6 * n))
        axes = fig.subplots(n, 1, squeeze=False, sharex=True)[:, 0]
        for i, ax in enumerate(axes):
            grid = batch["grid_times"][i].cpu()
            ax.plot(grid, batch["true_rate"][i].cpu(), color="0.6", label="true rate")
            ax.plot(grid, rates[i], label="learned rate")
            events = batch["times"][i][batch["mask"][i]].cpu()
            ax.plot(events, torch.zeros_like(events), "|", color="k", ms=10, label="events")
            ax.set_ylabel("rate")
        axes[0].legend(fontsize=6, loc="upper right")
        axes[-1].set_xlabel("time")
        fig.tight_layout()
        return {"intensity": fig}
