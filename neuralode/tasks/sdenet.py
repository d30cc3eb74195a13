"""SDE-Net's training (Kong et al. 2020, Algorithm 1): the drift on the in-distribution loss,
the diffusion net to be low on in-distribution inputs and high on perturbed ones.

The reference code steps two SGD optimisers in turn on each batch: one for the downsampling,
drift and head (cross-entropy of one stochastic forward pass, lr 0.1), one for the diffusion net
(binary cross-entropy: g(h0(x)) -> 0, g(h0(x + 2 N(0, 1))) -> 1, lr 0.01), with the features
detached for the latter. This task takes one step of one optimiser with two parameter groups
(:meth:`SDENetTask.parameter_groups`) on the sum of the two losses, which gives each group
exactly its own loss's gradient: the cross-entropy pass uses the diffusion net with its
parameters frozen (the features still get the gradient through sigma, as in the reference),
and the diffusion losses see detached features. One difference remains: the reference trains
the diffusion on features computed after that batch's drift step, this task before it.

Evaluation averages the softmax of ``eval_samples`` stochastic passes (sigma_max = 500 in
evaluation mode), as the reference's ``test_detection.py`` does with 10 passes, and logs the mean
diffusion on the test images and on perturbed ones.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from neuralode.models.sdenet import SDENet
from neuralode.tasks.base import Task


class SDENetTask(Task):
    """Trains an :class:`~neuralode.models.sdenet.SDENet`; ``best.pt`` has the lowest test error."""

    monitor = "error"
    monitor_mode = "min"

    def __init__(self, net: SDENet, diffusion_lr: float = 0.01, ood_noise_std: float = 2.0, eval_samples: int = 10):
        super().__init__()
        if not diffusion_lr > 0:
            raise ValueError(f"model.diffusion_lr must be a positive learning rate, got {diffusion_lr!r}")
        if not ood_noise_std > 0:
            raise ValueError(f"model.ood_noise_std must be positive (the perturbation of the diffusion's "
                             f"out-of-distribution inputs), got {ood_noise_std!r}")
        if not (isinstance(eval_samples, int) and eval_samples >= 1):
            raise ValueError(f"model.eval_samples must be a positive number of stochastic passes, got {eval_samples!r}")
        self.net = net
        self.diffusion_lr, self.ood_noise_std, self.eval_samples = float(diffusion_lr), float(ood_noise_std), eval_samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Group 0: downsampling, drift and head (the optimiser's lr); group 1: the diffusion net
        (``diffusion_lr``)."""
        diffusion = {id(p) for p in self.net.diffusion.parameters()}
        return [{"params": [p for p in self.parameters() if id(p) not in diffusion]},
                {"params": list(self.net.diffusion.parameters()), "lr": self.diffusion_lr}]

    def perturbed(self, x: torch.Tensor) -> torch.Tensor:
        """The diffusion net's out-of-distribution inputs: x + ood_noise_std * N(0, 1), unclipped."""
        return x + self.ood_noise_std * torch.randn_like(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        net = self.net
        h0 = net.features(x)
        logits = net.head(net.solve(h0, net.diffusion_of(h0, frozen=True)))
        ce = F.cross_entropy(logits, y)
        with torch.no_grad():
            h_out = net.features(self.perturbed(x))
        g_in, g_out = net.diffusion_of(h0.detach()), net.diffusion_of(h_out)
        bce_in = F.binary_cross_entropy(g_in, torch.zeros_like(g_in))
        bce_out = F.binary_cross_entropy(g_out, torch.ones_like(g_out))
        accuracy = (logits.detach().argmax(dim=1) == y).float().mean()
        return {"loss": ce + bce_in + bce_out, "ce": ce.detach(), "bce_in": bce_in.detach(), "bce_out": bce_out.detach(),
                "accuracy": accuracy, "sigma_in": g_in.detach().mean(), "sigma_out": g_out.detach().mean()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """Class probabilities: the softmax averaged over ``samples`` (default ``eval_samples``)
        Brownian paths; the features and the diffusion are computed once."""
        net = self.net
        h0 = net.features(x)
        g = net.diffusion_of(h0)
        n = samples or self.eval_samples
        return sum(F.softmax(net.head(net.solve(h0, g)), dim=1) for _ in range(n)) / n

    @torch.no_grad()
    def evaluation_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = batch
        probs = self.predict(x)
        accuracy = (probs.argmax(dim=1) == y).float().mean().item()
        nll = -probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean().item()
        return {
            "loss": nll,  # of the averaged prediction
            "accuracy": accuracy,
            "error": 1.0 - accuracy,
            "sigma_in": self.net.sigma(x).mean().item(),
            "sigma_perturbed": self.net.sigma(self.perturbed(x)).mean().item(),
            "n": len(y),
        }


class GroupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """MultiStepLR with milestones of its own for each parameter group: ``milestones`` is one
    list per group (or one list for all), the lr of group i is multiplied by ``gamma`` at each of
    ``milestones[i]`` (counted in scheduler steps: epochs, with ``scheduler_interval: epoch``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: Iterable, gamma: float = 0.1, last_epoch: int = -1):
        milestones = [list(m) if hasattr(m, "__iter__") else m for m in milestones]
        groups = len(optimizer.param_groups)
        if not milestones or not all(isinstance(m, list) for m in milestones):
            milestones = [list(milestones)] * groups  # one list for every group
        if len(milestones) != groups:
            raise ValueError(f"optim.scheduler.milestones has {len(milestones)} lists for {groups} parameter groups; "
                             f"give one list per group, or one list for all")
        self.milestones = [sorted(int(m) for m in ms) for ms in milestones]
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * self.gamma ** bisect_right(ms, self.last_epoch) for base, ms in zip(self.base_lrs, self.milestones)]
