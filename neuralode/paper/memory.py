"""Memory of one training step as depth grows: O(1) for ODE-Net, O(L) for ResNet, O(L~) for RK-Net.

Table 1 of the paper claims that the adjoint makes an ODE-Net's training memory independent
of the number of solver steps. This measures it: one training step (forward, cross-entropy,
backward) of the MNIST models at a fixed batch, for

- ResNet with L residual blocks,
- RK-Net (backprop through the solver) and ODE-Net (adjoint) with rk4 over n fixed steps,
  so L~ = 4n function evaluations forward,
- RK-Net and ODE-Net with dopri5 at tightening tolerances (L~ = the solver's forward NFE).

Memory is the peak of the bytes held by tensors saved for backward over the whole step, forward
and backward (:class:`neuralode.train.memory.SavedTensorsMeter`, the meter behind Table 1's
column), and on CUDA also the step's ``torch.cuda.max_memory_allocated`` above what was
allocated before it. Output:
``memory.md``, ``memory.csv`` and the log-log plot ``memory.png``.

    python -m neuralode.paper.memory --scale smoke
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from neuralode.models.odenet import ODENet
from neuralode.models.resnet import ResNet
from neuralode.ode import collect_stats
from neuralode.paper.common import (add_common_args, claims_table, scale_settings, verdict, fmt, markdown_table,
                                    out_dir, root_dir, write_csv)
from neuralode.source import source_commit
from neuralode.train.memory import MB, SavedTensorsMeter



@dataclass
class Measurement:
    """One training step of one model setting."""

    model: str  # ResNet | RK-Net | ODE-Net
    solver: str  # "-" | rk4 | dopri5
    setting: str  # "L=4", "n=4", "tol=1e-03"
    depth: float  # L for ResNet, L~ (forward NFE) for the ODE models
    nfe_forward: int
    nfe_backward: int
    saved_mb: float
    cuda_mb: float | None
    step_ms: float


def training_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()


def measure(net: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 1):
    """Peak saved-for-backward MB, CUDA MB above the baseline (or None), NFE forward/backward
    and the fastest wall time (ms) of ``repeats`` further steps (the minimum: least disturbed
    by other processes)."""
    net.train()
    device = x.device
    meter = SavedTensorsMeter()
    cuda_mb = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        net.zero_grad(set_to_none=True)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    with collect_stats() as stats, meter:
        training_step(net, x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        cuda_mb = (torch.cuda.max_memory_allocated(device) - baseline) / MB
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        training_step(net, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return meter.peak_bytes / MB, cuda_mb, stats.nfe_forward, stats.nfe_backward, 1000 * min(times)


def ode_net(channels: int, method: str, gradient: str, n_steps: int | None = None, tol: float | None = None) -> ODENet:
    """ODE-Net (``gradient="adjoint"``) or RK-Net (``"direct"``): rk4 over ``n_steps`` fixed steps,
    or dopri5 at ``tol``."""
    if method == "rk4":
        solver = dict(method="rk4", gradient=gradient, options={"step_size": 1.0 / n_steps})
    else:
        solver = dict(method=method, gradient=gradient, rtol=tol, atol=tol)
    return ODENet(channels=channels, solver=solver)


def settings_to_measure(depths: Iterable[int], tols: Iterable[float]):
    """(model, solver, setting, builder(channels)) for every point of the sweep."""
    for L in depths:
        yield "ResNet", "-", f"L={L}", lambda c, L=L: ResNet(channels=c, num_blocks=L)
    for gradient, model in (("direct", "RK-Net"), ("adjoint", "ODE-Net")):
        for n in depths:
            yield model, "rk4", f"n={n}", lambda c, n=n, g=gradient: ode_net(c, "rk4", g, n_steps=n)
        for tol in tols:
            yield model, "dopri5", f"tol={tol:.0e}", lambda c, tol=tol, g=gradient: ode_net(c, "dopri5", g, tol=tol)


def example_batch(batch_size: int, device: torch.device, data_root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real MNIST test images when they are on disk (adaptive NFE depends on the input), else
    seeded noise of the same shape."""
    from neuralode.data.mnist import raw_files_present

    if data_root is not None and raw_files_present(data_root):
        from torchvision.datasets import MNIST

        dataset = MNIST(str(data_root), train=False, download=False)
        x = dataset.data[:batch_size].float().div(255).unsqueeze(1)
        y = dataset.targets[:batch_size]
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch_size, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (batch_size,), generator=g)
    return x.to(device), y.to(device)


def run_sweep(batch_size: int, channels: int, depths: Iterable[int], tols: Iterable[float], repeats: int,
              device: torch.device, data_root: Path | None = None, seed: int = 0, log=print) -> list[Measurement]:
    """Measure every setting; the same seeded weights for a given architecture."""
    x, y = example_batch(batch_size, device, data_root)
    results = []
    for model, solver, setting, build in settings_to_measure(depths, tols):
        torch.manual_seed(seed)
        net = build(channels).to(device)
        saved_mb, cuda_mb, nfe_f, nfe_b, step_ms = measure(net, x, y, repeats)
        depth = int(setting[2:]) if model == "ResNet" else nfe_f
        results.append(Measurement(model, solver, setting, depth, nfe_f, nfe_b, saved_mb, cuda_mb, step_ms))
        log(f"  {model:8s} {solver:6s} {setting:10s} L~={depth:4d}  NFE {nfe_f}/{nfe_b}  saved {saved_mb:8.2f} MB"
            + (f"  cuda {cuda_mb:8.2f} MB" if cuda_mb is not None else "") + f"  {step_ms:8.1f} ms")
    return results


def time_ratios(results: list[Measurement]) -> dict[tuple[str, str], float]:
    """Step time of ODE-Net (adjoint) over RK-Net (direct backprop), per (solver, setting)."""
    direct = {(m.solver, m.setting): m.step_ms for m in results if m.model == "RK-Net"}
    return {(m.solver, m.setting): m.step_ms / direct[(m.solver, m.setting)]
            for m in results if m.model == "ODE-Net" and (m.solver, m.setting) in direct}


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``; returns (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def families(results: list[Measurement]) -> dict[str, list[Measurement]]:
    groups: dict[str, list[Measurement]] = {}
    for m in results:
        groups.setdefault(m.model if m.solver == "-" else f"{m.model} {m.solver}", []).append(m)
    return groups


HEADERS = ["model", "solver", "setting", "depth (L or L~)", "NFE fwd", "NFE bwd", "saved for backward (MB)",
           "CUDA step peak (MB)", "step time (ms)", "time adjoint/direct"]


def table_rows(results: list[Measurement]) -> list[list]:
    ratios = time_ratios(results)
    rows = []
    for m in results:
        ratio = ratios.get((m.solver, m.setting)) if m.model == "ODE-Net" else None
        rows.append([m.model, m.solver, m.setting, m.depth, m.nfe_forward, m.nfe_backward, f"{m.saved_mb:.2f}",
                     fmt(m.cuda_mb, ".1f"), f"{m.step_ms:.1f}", fmt(ratio, ".2f")])
    return rows


def growth_rows(results: list[Measurement]) -> list[list]:
    """Per family: memory at the smallest and largest depth and the fitted MB per unit depth."""
    rows = []
    for name, ms in families(results).items():
        a, b = linear_fit([m.depth for m in ms], [m.saved_mb for m in ms])
        first, last = min(ms, key=lambda m: m.depth), max(ms, key=lambda m: m.depth)
        rows.append([name, f"{first.depth}..{last.depth}", f"{first.saved_mb:.2f}", f"{last.saved_mb:.2f}",
                     f"{last.saved_mb / first.saved_mb:.2f}", f"{b:.3f}"])
    return rows


#: The paper's memory column per family prefix: grows with depth, or O(1).
PAPER_MEMORY = {"ResNet": "O(L)", "RK-Net": "O(L~)", "ODE-Net": "O(1)"}


def claims(results: list[Measurement]) -> list[list[str]]:
    """Per family: does the memory grow with depth (ResNet, RK-Net) or stay flat (ODE-Net)?"""
    rows = []
    for name, ms in families(results).items():
        paper = next((v for k, v in PAPER_MEMORY.items() if name.startswith(k)), None)
        if paper is None or len(ms) < 2:
            continue
        first, last = min(ms, key=lambda m: m.depth), max(ms, key=lambda m: m.depth)
        ratio = last.saved_mb / first.saved_mb
        flat = ratio < 1.05  # within 5% from the smallest to the largest depth
        rows.append([f"{name}: training-step memory {'constant in' if paper == 'O(1)' else 'grows with'} depth",
                     f"{first.saved_mb:.1f} -> {last.saved_mb:.1f} MB over depth {first.depth}..{last.depth}", paper,
                     verdict(flat if paper == "O(1)" else not flat)])
    return rows


def write_outputs(results: list[Measurement], folder: Path, scale: str, batch_size: int, channels: int,
                  device: torch.device) -> dict[str, Path]:
    """memory.md, memory.csv and memory.png in ``folder``."""
    folder = Path(folder)
    rows = table_rows(results)
    write_csv(folder / "memory.csv", HEADERS, rows)
    growth = markdown_table(["family", "depth range", "MB at min", "MB at max", "max/min", "MB per unit depth (fit)"],
                            growth_rows(results))
    text = (
        f"# Memory of one training step against depth (scale: {scale})\n\n"
        f"Batch {batch_size}, {channels} channels, device {device}, commit {source_commit()}. "
        "Saved for backward: peak bytes of tensors autograd holds for backward, forward and backward "
        "pass both (saved-tensor hooks). L = residual blocks; L~ = forward function evaluations "
        "(rk4: 4 per step). Paper (Table 1): ResNet O(L), RK-Net O(L~), ODE-Net O(1).\n\n"
        + markdown_table(HEADERS, rows)
        + "\nGrowth per family (a flat ODE-Net is the paper's O(1) claim):\n\n" + growth
        + "".join("\n" + table for table in claims_table(claims(results)))
    )
    (folder / "memory.md").write_text(text)
    plot(results, folder / "memory.png", scale, batch_size, cuda=device.type == "cuda")
    return {"md": folder / "memory.md", "csv": folder / "memory.csv", "png": folder / "memory.png"}


def plot(results: list[Measurement], path: Path, scale: str, batch_size: int, cuda: bool = False) -> None:
    import matplotlib.pyplot as plt

    panels = [("saved_mb", "saved for backward (MB)")] + ([("cuda_mb", "CUDA step peak (MB)")] if cuda else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    styles = {"ResNet": "s-", "RK-Net rk4": "o-", "ODE-Net rk4": "o--", "RK-Net dopri5": "^-", "ODE-Net dopri5": "^--"}
    for ax, (attr, label) in zip(axes[0], panels):
        for name, ms in families(results).items():
            ms = sorted(ms, key=lambda m: m.depth)
            ax.plot([m.depth for m in ms], [getattr(m, attr) for m in ms], styles.get(name, "x-"), label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("depth: L (ResNet blocks) or L~ (forward NFE)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Memory of one training step (batch {batch_size}, scale {scale})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode.paper.memory", description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="override the scale's batch size")
    parser.add_argument("--channels", type=int, default=None, help="override the scale's channel count (64)")
    parser.add_argument("--depths", default=None, help="comma-separated L and n values, e.g. 1,2,4,8,16,32")
    parser.add_argument("--tols", default=None, help="comma-separated dopri5 tolerances, e.g. 1e-1,1e-3,1e-5")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per setting (the fastest is reported)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (smoke default: 1)")
    args = parser.parse_args(argv)
    # Per scale (configs/paper_scales.yaml): batch, channels, depths (L and n), dopri5 tolerances,
    # timed repeats per setting and CPU threads (one on shared CPUs: steadier timings; null: torch's default).
    s = scale_settings("memory", args.scale)
    if args.batch_size is not None:
        s["batch_size"] = args.batch_size
    if args.channels is not None:
        s["channels"] = args.channels
    if args.depths:
        s["depths"] = tuple(int(v) for v in args.depths.split(","))
    if args.tols:
        s["tols"] = tuple(float(v) for v in args.tols.split(","))
    if args.repeats is not None:
        s["repeats"] = args.repeats
    if args.threads is not None:
        s["threads"] = args.threads
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    if min(s["depths"]) < 1 or s["batch_size"] < 1 or s["repeats"] < 1 or not all(0 < t < 1 for t in s["tols"]):
        raise SystemExit("error: depths, --batch-size and --repeats must be positive integers and tolerances in (0, 1)")
    from neuralode.train.seeding import resolve_device

    device = resolve_device(args.device)
    folder = out_dir(args.out)
    print(f"memory scaling, scale {args.scale}: batch {s['batch_size']}, {s['channels']} channels, device {device}")
    started = time.perf_counter()
    results = run_sweep(s["batch_size"], s["channels"], s["depths"], s["tols"], s["repeats"], device,
                        data_root=root_dir() / "data")
    paths = write_outputs(results, folder, args.scale, s["batch_size"], s["channels"], device)
    print((folder / "memory.md").read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
