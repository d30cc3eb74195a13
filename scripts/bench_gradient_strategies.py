"""Time and memory of the three gradient strategies on a latent-ODE-like solve (issue 11 targets).

Workload: the latent ODE's dynamics (4-D latent state, an MLP with two hidden layers of 20
units as in the paper's latent ODE), batch 100.

* Time: dopri5 at rtol = atol = 1e-5 with 150 output times over [0, 5]; the median time of a
  forward solve without grad, and of a training step (forward + backward) under each strategy.
  Target: checkpoint <= 3x the forward solve.
* Memory: the same field over 1,000 rk4 steps; the peak resident memory a training step adds,
  measured in a fresh process per strategy. Target: checkpoint <= 1/4 of direct.

    python scripts/bench_gradient_strategies.py [--threads 1] [--repeats 5]

Writes outputs/bench/gradient_strategies.md and prints it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from neuralode.ode import collect_stats, odeint

STRATEGIES = ("direct", "checkpoint", "adjoint")
TIME_TARGET = 3.0  # checkpoint training step / forward solve
MEMORY_TARGET = 0.25  # checkpoint peak / direct peak


class LatentDynamics(nn.Module):
    def __init__(self, latent: int = 4, hidden: int = 20):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, latent))

    def forward(self, t, z):
        return self.net(z)


def workload(seed: int = 0):
    torch.manual_seed(seed)
    return LatentDynamics(), torch.randn(100, 4)


def training_step(func, z0, t, gradient: str, **kwargs) -> None:
    zs = odeint(func, z0, t, gradient=gradient, **kwargs)
    zs.pow(2).mean().backward()


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_table(repeats: int) -> tuple[list[str], float]:
    func, z0 = workload()
    t = torch.linspace(0.0, 5.0, 150)
    kwargs = dict(method="dopri5", rtol=1e-5, atol=1e-5)

    def forward():
        with torch.no_grad():
            odeint(func, z0, t, **kwargs)

    with collect_stats() as stats:
        forward()
    base = median_time(forward, repeats)
    rows = [f"| forward solve (no grad) | {base * 1e3:.1f} | 1.00 | {stats.nfe_forward} | - |"]
    ratio_checkpoint = float("nan")
    for gradient in STRATEGIES:
        z = z0.clone().requires_grad_(True)
        with collect_stats() as stats:
            training_step(func, z, t, gradient, **kwargs)
        seconds = median_time(lambda: training_step(func, z, t, gradient, **kwargs), repeats)
        ratio = seconds / base
        if gradient == "checkpoint":
            ratio_checkpoint = ratio
        rows.append(f"| training step, {gradient} | {seconds * 1e3:.1f} | {ratio:.2f} | {stats.nfe_forward} | "
                    f"{stats.nfe_backward} |")
    return rows, ratio_checkpoint


def memory_child(gradient: str, steps: int) -> None:
    """Run in a fresh process: the peak RSS a training step adds over a warmed-up baseline."""
    func, z0 = workload()
    t = torch.tensor([0.0, 5.0])
    options = {"step_size": 5.0 / steps}
    z = z0.clone().requires_grad_(True)
    # Warm up allocator and kernels on a short solve, then take the baseline.
    training_step(func, z, torch.tensor([0.0, 5.0 / steps * 4]), gradient, method="rk4", options=options)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    training_step(func, z, t, gradient, method="rk4", options=options)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_kib": after - before}))


def memory_table(steps: int, threads: int) -> tuple[list[str], float]:
    peaks = {}
    for gradient in STRATEGIES:
        out = subprocess.run([sys.executable, __file__, "--memory-child", gradient, "--steps", str(steps),
                              "--threads", str(threads)], check=True, capture_output=True, text=True).stdout
        peaks[gradient] = json.loads(out.strip().splitlines()[-1])["peak_kib"] / 1024
    rows = [f"| {g} | {peaks[g]:.1f} | {peaks[g] / peaks['direct']:.3f} |" if peaks["direct"] > 0 else
            f"| {g} | {peaks[g]:.1f} | - |" for g in STRATEGIES]
    return rows, peaks["checkpoint"] / peaks["direct"] if peaks["direct"] > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000, help="rk4 steps of the memory measurement")
    parser.add_argument("--memory-child", choices=STRATEGIES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "outputs/bench/gradient_strategies.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.steps)
        return
    time_rows, time_ratio = time_table(args.repeats)
    memory_rows, memory_ratio = memory_table(args.steps, args.threads)
    lines = [
        "# Gradient strategies on a latent-ODE-like solve",
        "",
        f"4-D state, batch 100, MLP 4-20-20-4; torch {torch.__version__}, {args.threads} thread(s).",
        "",
        "## Time: dopri5, rtol = atol = 1e-5, 150 output times over [0, 5]",
        "",
        "| what | ms (median) | x forward | NFE forward | NFE backward |",
        "|---|---|---|---|---|",
        *time_rows,
        "",
        f"checkpoint training step / forward solve = {time_ratio:.2f} (target <= {TIME_TARGET}): "
        f"{'met' if time_ratio <= TIME_TARGET else 'NOT met'}",
        "",
        f"## Memory: rk4, {args.steps} steps, peak resident memory added by one training step",
        "",
        "| gradient | MiB | x direct |",
        "|---|---|---|",
        *memory_rows,
        "",
        f"checkpoint / direct = {memory_ratio:.3f} (target <= {MEMORY_TARGET}): "
        f"{'met' if memory_ratio <= MEMORY_TARGET else 'NOT met'}",
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
