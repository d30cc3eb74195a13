"""Figure 1 from two trained models: a ResNet's discrete steps against an ODE-Net's vector field.

Both learn the same 1-D regression, ``y = 2 tanh(1.5 x)`` on ``x`` in [-2, 2], with a 1-D
hidden state: the ResNet as ``L`` residual steps ``h + f_l(h)``, the ODE-Net as
``dh/dt = f(t, h)`` on ``t`` in [0, 1] solved by dopri5 (gradients by the adjoint). The plot
shows the hidden state of several inputs against depth, with circles where each network
evaluated its function: at every layer for the ResNet, wherever the adaptive solver chose for
the ODE-Net, whose vector field is drawn behind. Output: ``fig1.png`` and ``fig1.csv``.

    python -m neuralode.paper.fig1 --scale smoke
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from neuralode.ode import collect_stats, odeint, odeint_adjoint
from neuralode.paper.common import add_common_args, out_dir, scale_settings, smoke_threads, write_csv

TOL = 1e-5


def target(x: torch.Tensor) -> torch.Tensor:
    """Monotone, as any map a 1-D flow can learn must be: trajectories cannot cross."""
    return 2.0 * torch.tanh(1.5 * x)


def mlp(inputs: int, hidden: int = 32) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, 1))


class ResNet1D(nn.Module):
    """``num_blocks`` residual steps ``h <- h + f_l(h)`` on a 1-D hidden state."""

    def __init__(self, num_blocks: int = 6):
        super().__init__()
        self.blocks = nn.ModuleList(mlp(1) for _ in range(num_blocks))

    def trajectory(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden state after each block: shape (num_blocks + 1, batch, 1)."""
        hs = [x]
        for block in self.blocks:
            hs.append(hs[-1] + block(hs[-1]))
        return torch.stack(hs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trajectory(x)[-1]


class Field(nn.Module):
    """dh/dt = f(t, h): a small MLP of the state and the time."""

    def __init__(self):
        super().__init__()
        self.net = mlp(2)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([h, t.expand_as(h)], dim=-1))


class ODENet1D(nn.Module):
    def __init__(self):
        super().__init__()
        self.func = Field()
        self.register_buffer("t", torch.tensor([0.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return odeint_adjoint(self.func, x, self.t, rtol=TOL, atol=TOL)[-1]


def train(model: nn.Module, steps: int, seed: int = 0, lr: float = 1e-2) -> float:
    """Fit ``target`` by Adam on fresh uniform inputs each step; returns the final test MSE."""
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        x = torch.rand(64, 1, generator=g) * 4 - 2
        loss = ((model(x) - target(x)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x = torch.linspace(-2, 2, 201).unsqueeze(1)
        return float(((model(x) - target(x)) ** 2).mean())


class Recorder(nn.Module):
    """``func`` that remembers where it was evaluated: (t, h of every input)."""

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self.evals: list[tuple[float, torch.Tensor]] = []

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.evals.append((float(t), h.detach().reshape(-1).clone()))
        return self.func(t, h)


@dataclass
class Figure1Data:
    inputs: torch.Tensor  # (n,)
    resnet_hs: torch.Tensor  # (L + 1, n)
    ode_t: torch.Tensor  # dense times (m,)
    ode_hs: torch.Tensor  # (m, n)
    ode_evals: list  # (t, h of every input) per evaluation of f
    field_h: torch.Tensor  # a grid of (h, t) and the learned dh/dt there, for the arrows
    field_t: torch.Tensor
    field_dh: torch.Tensor
    resnet_mse: float
    ode_mse: float
    nfe: int


def build(steps: int, num_blocks: int = 6, n_inputs: int = 9, seed: int = 0) -> Figure1Data:
    """Train both models and trace ``n_inputs`` inputs through them."""
    torch.manual_seed(seed)
    resnet = ResNet1D(num_blocks)
    resnet_mse = train(resnet, steps, seed)
    torch.manual_seed(seed)
    ode = ODENet1D()
    ode_mse = train(ode, steps, seed)
    x = torch.linspace(-1.8, 1.8, n_inputs).unsqueeze(1)
    with torch.no_grad():
        resnet_hs = resnet.trajectory(x)[..., 0]
        recorder = Recorder(ode.func)
        dense_t = torch.linspace(0.0, 1.0, 101)
        with collect_stats() as stats:
            # dopri5 interpolates the dense outputs from its own steps: the same evaluations
            # as a solve to t = 1 alone, and the plot shows exactly those.
            ode_hs = odeint(recorder, x, dense_t, rtol=TOL, atol=TOL)[..., 0]
        field_h, field_t = torch.meshgrid(torch.linspace(-2.4, 2.4, 21), torch.linspace(0, 1, 15), indexing="xy")
        # Rows of the grid share a time t: evaluate f on each row's states at that t.
        field_dh = torch.stack([ode.func(t_row[0], h_row.unsqueeze(1))[:, 0] for t_row, h_row in zip(field_t, field_h)])
    return Figure1Data(x[:, 0], resnet_hs, dense_t, ode_hs, recorder.evals, field_h, field_t, field_dh,
                       resnet_mse, ode_mse, stats.nfe_forward)


def plot(data: Figure1Data, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (ax_res, ax_ode) = plt.subplots(1, 2, figsize=(11, 5), sharex=True)
    L = data.resnet_hs.shape[0] - 1
    depth = torch.arange(L + 1).numpy()
    for i in range(data.resnet_hs.shape[1]):
        ax_res.plot(data.resnet_hs[:, i].numpy(), depth, "-", color="C0", lw=1)
        ax_res.plot(data.resnet_hs[:, i].numpy(), depth, "o", color="k", mfc="none", ms=5)
    ax_res.set(title=f"Residual network: {L} blocks\ntest MSE {data.resnet_mse:.1e}", xlabel="hidden state h",
               ylabel="depth (layer)", ylim=(-0.2, L + 0.2))

    # The flow moves h by dh per dt: arrows (dh, dt) scaled to unit length.
    u, v = data.field_dh, torch.ones_like(data.field_dh)
    norm = torch.sqrt(u**2 + v**2)
    ax_ode.quiver(data.field_h.numpy(), data.field_t.numpy(), (u / norm).numpy(), (v / norm).numpy(), color="0.7",
                  angles="xy", scale=30, width=0.003)
    for i in range(data.ode_hs.shape[1]):
        ax_ode.plot(data.ode_hs[:, i].numpy(), data.ode_t.numpy(), "-", color="C0", lw=1)
    for t, h in data.ode_evals:
        ax_ode.plot(h.numpy(), [t] * len(h), "o", color="k", mfc="none", ms=5)
    ax_ode.set(title=f"ODE network: dopri5 at tol {TOL:g}, {data.nfe} evaluations\ntest MSE {data.ode_mse:.1e}",
               xlabel="hidden state h", ylabel="depth (time t)", ylim=(-0.02, 1.02), xlim=(-2.5, 2.5))
    fig.suptitle("Figure 1: a ResNet's discrete steps against an ODE-Net's vector field; circles: evaluations of f")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(data: Figure1Data, folder: Path, scale: str = "smoke", steps: int | None = None) -> dict[str, Path]:
    folder = Path(folder)
    (folder / "fig1.md").write_text(
        f"# Figure 1: toy 1-D regression (scale: {scale})\n\n"
        f"y = 2 tanh(1.5 x) on [-2, 2]{f', {steps} Adam steps each' if steps is not None else ''}. "
        f"ResNet ({data.resnet_hs.shape[0] - 1} blocks, {data.resnet_hs.shape[0] - 1} evaluations of f per input): "
        f"test MSE {data.resnet_mse:.2e}. ODE-Net (dopri5, tol {TOL:g}, adjoint gradients): test MSE "
        f"{data.ode_mse:.2e}, {data.nfe} evaluations of f for the plotted solve.\n")
    rows = [["resnet", i, float(l), float(data.resnet_hs[l, i])]
            for l in range(data.resnet_hs.shape[0]) for i in range(data.resnet_hs.shape[1])]
    rows += [["odenet_evaluation", i, t, float(h[i])] for t, h in data.ode_evals for i in range(len(h))]
    write_csv(folder / "fig1.csv", ["model", "input", "depth", "h"], rows)
    plot(data, folder / "fig1.png")
    return {"png": folder / "fig1.png", "csv": folder / "fig1.csv", "md": folder / "fig1.md"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode figure fig1", description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps, Adam, batch 64 (default: the scale's, configs/paper_scales.yaml)")
    parser.add_argument("--blocks", type=int, default=6, help="ResNet blocks (default 6, as Table 1's ResNet)")
    args = parser.parse_args(argv)
    steps = scale_settings("fig1", args.scale)["steps"] if args.steps is None else args.steps
    if steps < 0 or args.blocks < 1:
        raise SystemExit("error: --steps must be >= 0 and --blocks >= 1")
    smoke_threads(args.scale)
    started = time.perf_counter()
    data = build(steps, args.blocks)
    paths = write_outputs(data, out_dir(args.out), args.scale, steps)
    print(f"fig1 (scale {args.scale}, {steps} steps): ResNet test MSE {data.resnet_mse:.2e}, ODE-Net test MSE "
          f"{data.ode_mse:.2e} with {data.nfe} evaluations of f")
    print(f"wrote {paths['png']} and {paths['csv']} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
