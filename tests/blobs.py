"""A tiny task and data module that keep the trainer honest about being generic (it trains them
exactly as it trains the MNIST models), and the overrides that make an MNIST experiment tiny."""

from __future__ import annotations

import functools
import os
import signal

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from neuralode.data.base import DataModule
from neuralode.ode import odeint_adjoint
from neuralode.tasks.base import Task
from neuralode.train.config import LoggerConfig, TrainerConfig
from neuralode.train.trainer import Trainer


class NoisyBlobs(Dataset):
    """Three Gaussian blobs in 4-D; training examples get fresh noise from torch's global RNG
    each time they are read (like random-crop augmentation), which a resume must reproduce."""

    def __init__(self, n: int, seed: int, augment: bool):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(n, 4, generator=g) * 0.5 + F.one_hot(self.y, 4).float() * 2
        self.augment = augment

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x = self.x[i] + (0.1 * torch.randn(4) if self.augment else 0)
        return x, self.y[i]


class BlobData(DataModule):
    def __init__(self, n_train: int = 64, n_eval: int = 24, batch_size: int = 16, num_workers: int = 0):
        super().__init__(batch_size=batch_size, eval_batch_size=8, num_workers=num_workers)
        self.n_train, self.n_eval = n_train, n_eval

    def train_dataset(self) -> Dataset:
        return NoisyBlobs(self.n_train, seed=1, augment=True)

    def eval_dataset(self) -> Dataset:
        return NoisyBlobs(self.n_eval, seed=2, augment=False)


class ODEFunc(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(h))


class BlobTask(Task):
    """A small classifier with dropout (training draws from the global RNG); ``ode=True`` puts
    an adjoint ODE block in the middle, so the trainer has solver statistics to log."""

    monitor = "error"
    monitor_mode = "min"

    def __init__(self, ode: bool = False, interrupt_at_step: int | None = None, interrupt_signal: int = signal.SIGINT):
        super().__init__()
        self.interrupt_signal = interrupt_signal
        self.inp = nn.Linear(4, 8)
        self.func = ODEFunc(8) if ode else None
        self.out = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 3))
        self.interrupt_at_step = interrupt_at_step
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        if self.func is not None:
            t = torch.tensor([0.0, 1.0])
            h = odeint_adjoint(self.func, h, t, rtol=1e-4, atol=1e-4, adjoint_params=tuple(self.func.parameters()))[-1]
        return self.out(h)

    def training_step(self, batch):
        self.steps += 1
        if self.steps == self.interrupt_at_step:
            os.kill(os.getpid(), self.interrupt_signal)  # as if Ctrl-C (or SIGTERM) came during this step
        x, y = batch
        logits = self(x)
        return {"loss": F.cross_entropy(logits, y), "accuracy": (logits.argmax(1) == y).float().mean()}

    @torch.no_grad()
    def evaluation_step(self, batch):
        x, y = batch
        logits = self(x)
        accuracy = (logits.argmax(1) == y).float().mean().item()
        return {"loss": F.cross_entropy(logits, y).item(), "accuracy": accuracy, "error": 1 - accuracy, "n": len(y)}

    def figures(self, batch):
        figure, ax = plt.subplots(figsize=(2, 2))
        ax.scatter(*batch[0][:, :2].T.cpu())
        return {"inputs": figure}


def make_trainer(run_dir, *, ode: bool = False, seed: int = 0, interrupt_at_step: int | None = None,
                 interrupt_signal: int = signal.SIGINT, logging: LoggerConfig | None = None, device: str = "cpu",
                 **settings) -> Trainer:
    """A Trainer on BlobTask/BlobData: 4 batches an epoch, SGD with a per-epoch schedule."""
    torch.manual_seed(seed)
    settings = {"max_epochs": 3, "progress_bar": False, **settings}
    return Trainer(
        BlobTask(ode=ode, interrupt_at_step=interrupt_at_step, interrupt_signal=interrupt_signal),
        BlobData(),
        run_dir,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
        settings=TrainerConfig(**settings),
        logging=logging,
        device=device,
        seed=seed,
        config={"name": "blobs", "seed": seed, "model": {"ode": ode}},
    )


#: Overrides that make any MNIST experiment tiny: generated images, a few batches, CPU.
TINY_MNIST = [
    "data.synthetic=true", "data.synthetic_train_size=32", "data.synthetic_eval_size=16",
    "data.batch_size=8", "data.eval_batch_size=16", "data.download=false",
    "device=cpu", "trainer.progress_bar=false",
]


def tiny_mnist(experiment: str, *overrides: str) -> list[str]:
    """Overrides for a seconds-long run of an MNIST experiment: TINY_MNIST and a narrow network
    (the reference widths, and their parameter counts, are tested in test_mnist_models.py)."""
    width = "model.net.hidden=32" if experiment == "mnist_mlp" else "model.net.channels=16"
    return [f"experiment={experiment}", *TINY_MNIST, width, *overrides]
