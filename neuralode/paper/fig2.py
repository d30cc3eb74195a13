"""Figure 2 from one real adjoint solve: the state forward in time, the adjoint state backward
in time, jumping by dL/dz(t_i) at each observation.

A 2-D spiral ``dz/dt = A z`` (``A`` a parameter) is solved
with ``odeint_adjoint`` from ``t = 0`` to the last of several observation times, with the loss
``L = sum_i |z(t_i) - x_i|^2 / 2`` against points ``x_i`` of a spiral with slightly different
``A``. Every evaluation of ``f`` is recorded: in the forward solve the state; in the adjoint
solve also the adjoint ``a(t) = dL/dz(t)``, which the backward pass hands to ``f``'s output as
the cotangent ``-a`` of its vector-Jacobian product. Nothing is drawn that the solver did not
compute. Output: ``fig2.png`` and ``fig2.csv`` (every recorded evaluation).

    python -m neuralode.paper.fig2
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from neuralode.ode import collect_stats, odeint, odeint_adjoint
from neuralode.paper.common import add_common_args, out_dir, write_csv

TRUE_A = [[-0.1, 2.0], [-2.0, -0.1]]


class Spiral(nn.Module):
    """dz/dt = A z: with TRUE_A a spiral that winds slowly in towards the origin."""

    def __init__(self, a: list[list[float]]):
        super().__init__()
        self.A = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ self.A.T


class Recorder(nn.Module):
    """Wraps ``func`` and records ``(t, z)`` at every forward evaluation and ``(t, z, a)`` at
    every evaluation of the adjoint solve (where ``f``'s output requires grad)."""

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self.forward_evals: list[tuple[float, torch.Tensor]] = []
        self.backward_evals: list[tuple[float, torch.Tensor, torch.Tensor]] = []

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dz = self.func(t, z)
        t_now, z_now = float(t), z.detach().clone()
        if dz.requires_grad:
            # The adjoint solve asks for a^T df/dz by backpropagating -a through f's output.
            dz.register_hook(lambda g: self.backward_evals.append((t_now, z_now, -g.detach().clone())))
        else:
            self.forward_evals.append((t_now, z_now))
        return dz


@dataclass
class AdjointSolve:
    """One forward and adjoint solve, with every evaluation the solver made."""

    t_obs: torch.Tensor  # observation times (t_obs[0] = 0 is the start, not observed)
    ys: torch.Tensor  # z at t_obs
    targets: torch.Tensor  # x_i at t_obs[1:]
    jumps: torch.Tensor  # dL/dz(t_i) at t_obs[1:]
    y0_grad: torch.Tensor  # dL/dz(0) from autograd
    A_grad: torch.Tensor  # dL/dA from autograd
    forward_evals: list
    backward_evals: list
    nfe_forward: int
    nfe_backward: int
    dense_t: torch.Tensor  # a fine grid, for the state's curve
    dense_z: torch.Tensor


def solve_with_adjoint(n_obs: int = 4, t_end: float = 4.0, tol: float = 1e-4) -> AdjointSolve:
    """Solve forward to ``n_obs`` observation times and back with the adjoint, recording both."""
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64, requires_grad=True)
    t_obs = torch.linspace(0.0, t_end, n_obs + 1, dtype=torch.float64)
    with torch.no_grad():
        truth = Spiral([[-0.3, 2.5], [-2.5, -0.3]])
        targets = odeint(truth, y0.detach(), t_obs, rtol=1e-9, atol=1e-10)[1:]
    func = Recorder(Spiral(TRUE_A))
    with collect_stats() as stats:
        ys = odeint_adjoint(func, y0, t_obs, rtol=tol, atol=tol)
        loss = 0.5 * ((ys[1:] - targets) ** 2).sum()
        loss.backward()
    jumps = (ys[1:] - targets).detach()
    with torch.no_grad():
        dense_t = torch.linspace(0.0, t_end, 400, dtype=torch.float64)
        dense_z = odeint(Spiral(TRUE_A), y0.detach(), dense_t, rtol=tol, atol=tol)
    return AdjointSolve(t_obs, ys.detach(), targets, jumps, y0.grad.clone(), func.func.A.grad.clone(),
                        func.forward_evals, func.backward_evals, stats.nfe_forward, stats.nfe_backward, dense_t, dense_z)


def split_segments(solve: AdjointSolve) -> list[list[tuple]]:
    """The adjoint's evaluations per backward segment [t_i -> t_{i-1}], last segment first.

    A segment ends at t_{i-1} (dopri5 evaluates there twice: its last two stages have c = 1);
    the next segment starts with one more evaluation at the same time, after the jump. So a new
    segment starts at the last of a run of evaluations at an observation time.
    """
    borders = solve.t_obs[1:-1].tolist()
    evals = solve.backward_evals
    at_border = [any(abs(t - b) < 1e-9 for b in borders) for t, _, _ in evals]
    segments: list[list[tuple]] = [[]]
    for j, record in enumerate(evals):
        starts = (0 < j and at_border[j] and at_border[j - 1] and abs(evals[j - 1][0] - record[0]) < 1e-9
                  and (j + 1 == len(evals) or abs(evals[j + 1][0] - record[0]) > 1e-9))
        if starts:
            segments.append([])
        segments[-1].append(record)
    return segments


def plot(solve: AdjointSolve, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (ax_phase, ax_state, ax_adj) = plt.subplots(1, 3, figsize=(16, 4.6))
    t_obs = solve.t_obs.numpy()
    z = solve.dense_z.numpy()
    fz = torch.stack([z for _, z in solve.forward_evals]).numpy()

    ax_phase.plot(z[:, 0], z[:, 1], color="C0", lw=1, label="z(t)")
    ax_phase.plot(fz[:, 0], fz[:, 1], "o", ms=3, mfc="none", color="C0", label="forward evaluations of f")
    ax_phase.plot(solve.targets[:, 0], solve.targets[:, 1], "k*", ms=9, label="observations x_i")
    ax_phase.plot(solve.ys[1:, 0], solve.ys[1:, 1], "o", color="C3", ms=5, label="z(t_i)")
    ax_phase.set(xlabel="z1", ylabel="z2", title="state in the plane")
    ax_phase.legend(fontsize=7)

    ft = [t for t, _ in solve.forward_evals]
    for k, color in ((0, "C0"), (1, "C1")):
        ax_state.plot(solve.dense_t.numpy(), z[:, k], color=color, lw=1, label=f"z{k + 1}(t)")
        ax_state.plot(ft, fz[:, k], "o", ms=3, mfc="none", color=color)
        ax_state.plot(t_obs[1:], solve.targets[:, k], "k*", ms=8)
    for t in t_obs[1:]:
        ax_state.axvline(t, color="gray", lw=0.5, ls=":")
    ax_state.set(xlabel="t", ylabel="z", title=f"forward solve: {solve.nfe_forward} evaluations (circles)")
    ax_state.legend(fontsize=7)

    segments = split_segments(solve)
    for s, segment in enumerate(segments):
        seg = sorted(segment, key=lambda r: r[0])
        ts = [r[0] for r in seg]
        a = torch.stack([r[2] for r in seg]).numpy()
        for k, color in ((0, "C2"), (1, "C4")):
            ax_adj.plot(ts, a[:, k], "-o", ms=3, mfc="none", lw=1, color=color, label=f"a{k + 1}(t)" if s == 0 else None)
    # The jumps, as the solver made them: a(t_N) starts at dL/dz(t_N); at each earlier t_i the
    # value that ends one segment moves by dL/dz(t_i) to start the next.
    starts = [torch.zeros(2, dtype=torch.float64)] + [segment[-1][2] for segment in segments[:-1]]
    for t, before, segment in zip(reversed(t_obs[1:]), starts, segments):
        after = segment[0][2]
        for k, color in ((0, "C2"), (1, "C4")):
            ax_adj.annotate("", xy=(t, float(after[k])), xytext=(t, float(before[k])),
                            arrowprops=dict(arrowstyle="->", color=color, lw=1.5))
    for t in t_obs[1:]:
        ax_adj.axvline(t, color="gray", lw=0.5, ls=":")
    ax_adj.axhline(0.0, color="black", lw=0.5)
    ax_adj.set(xlabel="t (solved backwards)", ylabel="a(t) = dL/dz(t)",
               title=f"adjoint solve: {solve.nfe_backward} evaluations; arrows: jumps dL/dz(t_i)")
    ax_adj.legend(fontsize=7)
    fig.suptitle("Figure 2: reverse-mode differentiation of an ODE solution (one real odeint_adjoint solve)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(solve: AdjointSolve, folder: Path, scale: str = "smoke") -> dict[str, Path]:
    folder = Path(folder)
    last = solve.backward_evals[-1][2]
    (folder / "fig2.md").write_text(
        f"# Figure 2: one adjoint solve (scale: {scale}; the same small solve at every scale)\n\n"
        f"dz/dt = A z in 2-D, {len(solve.t_obs) - 1} observations, dopri5: {solve.nfe_forward} evaluations forward, "
        f"{solve.nfe_backward} in the adjoint solve over {len(split_segments(solve))} segments. The adjoint recorded "
        f"at t = 0, {[round(v, 6) for v in last.tolist()]}, is autograd's dL/dz(0), "
        f"{[round(v, 6) for v in solve.y0_grad.tolist()]}.\n")
    rows = [["forward", 0, t, *z.tolist(), "", ""] for t, z in solve.forward_evals]
    for s, segment in enumerate(split_segments(solve)):
        rows += [["adjoint", s, t, *z.tolist(), *a.tolist()] for t, z, a in segment]
    write_csv(folder / "fig2.csv", ["solve", "segment", "t", "z1", "z2", "a1", "a2"], rows)
    plot(solve, folder / "fig2.png")
    return {"png": folder / "fig2.png", "csv": folder / "fig2.csv", "md": folder / "fig2.md"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode figure fig2", description=__doc__.split("\n\n")[0])
    add_common_args(parser)  # the same solve at every scale: it is one small ODE
    parser.add_argument("--observations", type=int, default=4, help="number of observation times (default 4)")
    parser.add_argument("--tol", type=float, default=1e-4, help="rtol = atol of both solves (default 1e-4)")
    args = parser.parse_args(argv)
    if args.observations < 1 or not 0 < args.tol < 1:
        raise SystemExit("error: --observations must be >= 1 and --tol in (0, 1)")
    started = time.perf_counter()
    solve = solve_with_adjoint(args.observations, tol=args.tol)
    paths = write_outputs(solve, out_dir(args.out), args.scale)
    print(f"fig2 (scale {args.scale}; the same small solve at every scale): {solve.nfe_forward} forward and "
          f"{solve.nfe_backward} adjoint evaluations, {len(split_segments(solve))} backward segments; "
          f"dL/dz(0) = {solve.y0_grad.tolist()}")
    print(f"wrote {paths['png']} and {paths['csv']} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
