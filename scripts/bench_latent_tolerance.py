"""What the solver tolerance costs the spiral latent ODE (Table 2) per training step: wall time and
dynamics evaluations of one step (ELBO forward and backward, backprop through the solver as the
recipe trains) of each trained latent ODE, at each of Table 2's tolerances.

Section 6 of the paper says its sequence models used scipy's default tolerance, 1.5e-8; the cpu
recipe trains at 1e-5. Table 2's tolerance study shows what the tolerance does to the RMSE of the
trained models; this shows what it would cost to train at each.

    python scripts/bench_latent_tolerance.py [RUN ...] [--steps 10]

RUN: latent ODE run folders (default: outputs/paper/runs/cpu/latent_ode_spiral_n*_s0, made by
``make table2 SCALE=cpu``). Writes outputs/bench/latent_tolerance.md and prints it. Single-threaded,
so that the figures compare with training's one run a core.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from neuralode.ode import collect_stats
from neuralode.paper.common import markdown_table
from neuralode.paper.runs import load_trained
from neuralode.paper.table2 import TOLERANCES

OUT = Path("outputs/bench/latent_tolerance.md")
DEFAULT_RUNS = sorted(Path("outputs/paper/runs/cpu").glob("latent_ode_spiral_n*_s0"))


def step_cost(task, batch: dict, rtol: float, atol: float, dtype: str, steps: int) -> tuple[float, float]:
    """Median ms per training step and NFE per step (forward solves) of ``task`` at this tolerance."""
    kind = getattr(torch, dtype)
    task = copy.deepcopy(task).to(kind).train()
    task.net.solver = replace(task.net.solver, rtol=rtol, atol=atol).validate()
    batch = {k: (v.to(kind) if v.is_floating_point() else v) for k, v in batch.items()}
    times, nfe = [], []
    for i in range(steps + 1):
        torch.manual_seed(i)  # the same posterior draws at every tolerance
        task.zero_grad()
        with collect_stats() as stats:
            started = time.perf_counter()
            task.training_step(batch)["loss"].backward()
            elapsed = time.perf_counter() - started
        if i:  # the first step warms up
            times.append(elapsed)
            nfe.append(stats.nfe_forward)
    return 1000 * statistics.median(times), statistics.mean(nfe)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, default=DEFAULT_RUNS)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per tolerance (after one warm-up)")
    args = parser.parse_args(argv)
    if not args.runs:
        raise SystemExit("error: no latent ODE runs given or found under outputs/paper/runs/cpu: "
                         "run `make table2 SCALE=cpu` first, or pass run folders")
    torch.set_num_threads(1)
    headers = ["run"] + [f"{rtol:g}/{atol:g} {dtype}: ms / step, NFE / step" for rtol, atol, dtype in TOLERANCES]
    rows = []
    for run in args.runs:
        task, data, _ = load_trained(run)
        batch = next(iter(data.train_dataloader()))
        cells = []
        for rtol, atol, dtype in TOLERANCES:
            ms, nfe = step_cost(task, batch, rtol, atol, dtype, args.steps)
            cells.append(f"{ms:.0f} ms, {nfe:.0f}")
        rows.append([run.name, *cells])
        print(run.name, *cells, sep=" | ", flush=True)
    text = "\n".join([
        "# Spiral latent ODE: cost of a training step at each tolerance",
        "",
        f"One training step (ELBO forward and backward through the solver) of each trained model on one "
        f"training batch, single-threaded; median of {args.steps} steps after a warm-up, NFE of the "
        f"forward solves per step. CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}.",
        "",
        markdown_table(headers, rows),
    ])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
