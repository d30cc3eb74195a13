"""Per-sample step control and host reads (issue 14): a batch whose samples need very
different steps, solved with one shared step and with a step per sample.

Van der Pol, x'' = mu (1 - x^2) x' - x from (2, 0), with mu spread evenly over [0.1, 30] across
256 samples, dopri5 at rtol = atol = 1e-6 over t in [0, 10] (5 outputs). Rows:

* neuralode, shared step, the default loop (reads the error norm on the host at each attempt);
* neuralode, shared step on the batched loop, ``sync_every`` = 1 and 8;
* neuralode, ``per_sample=True``;
* torchdiffeq (shared step) and torchode (a step per sample, its default), when installed.

Columns: evaluations of f per sample (a shared step evaluates every sample at every stage),
wall time, host reads of device values per solve, and the max error of the final state against
a float64 solve at 1e-10. Target (issue 14): per-sample control at most 0.6x the evaluations
per sample of the shared step.

    python scripts/bench_per_sample.py [--samples 256] [--threads 1] [--device cpu|cuda]

Writes outputs/bench/per_sample.md and prints it.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from neuralode.ode import odeint
from neuralode.ode.stats import count_host_reads, last_stats

try:
    import torchdiffeq
except ImportError:
    torchdiffeq = None
try:
    import torchode
except ImportError:
    torchode = None

TOL = 1e-6
T_END = 10.0
TARGET = 0.6  # per-sample evaluations per sample <= 0.6 x the shared step's


class VanDerPol(torch.nn.Module):
    def __init__(self, mu: torch.Tensor):
        super().__init__()
        self.register_buffer("mu", mu)
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, self.mu * (1 - x * x) * v - x], -1)


def solve_neuralode(f, y0, t, options):
    y = odeint(f, y0, t, rtol=TOL, atol=TOL, method="dopri5", options=options)[-1]
    stats = last_stats()
    per_sample = stats.nfe_per_sample.double().mean().item() if stats.nfe_per_sample is not None else stats.nfe
    return y, per_sample


def solve_torchdiffeq(f, y0, t, _):
    return torchdiffeq.odeint(f, y0, t, rtol=TOL, atol=TOL, method="dopri5")[-1], None


def solve_torchode(f, y0, t, _):
    term = torchode.ODETerm(f)
    step = torchode.Dopri5(term=term)
    controller = torchode.IntegralController(atol=TOL, rtol=TOL, term=term)
    t_eval = t.expand(y0.shape[0], -1)
    problem = torchode.InitialValueProblem(y0, t_start=t_eval[:, 0], t_end=t_eval[:, -1], t_eval=t_eval)
    solution = torchode.AutoDiffAdjoint(step, controller).solve(problem)
    return solution.ys[:, -1], solution.stats["n_f_evals"].double().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="outputs/bench/per_sample.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    mu = torch.linspace(0.1, 30.0, args.samples, device=device)
    y0 = torch.tensor([2.0, 0.0], device=device).expand(args.samples, 2).contiguous()
    t = torch.linspace(0.0, T_END, 5, device=device)
    with torch.no_grad():
        exact = odeint(VanDerPol(mu.double()), y0.double(), t.double(), rtol=1e-10, atol=1e-10,
                       options={"per_sample": True})[-1]

    runs = [
        ("neuralode, shared step (default loop)", solve_neuralode, {}),
        ("neuralode, shared step, batched loop, sync_every=1", solve_neuralode, {"sync_every": 1}),
        ("neuralode, shared step, batched loop, sync_every=8", solve_neuralode, {"sync_every": 8}),
        ("neuralode, per_sample=True (sync_every=1)", solve_neuralode, {"per_sample": True, "sync_every": 1}),
        ("neuralode, per_sample=True, sync_every=8", solve_neuralode, {"per_sample": True, "sync_every": 8}),
    ]
    if torchdiffeq is not None:
        runs.append((f"torchdiffeq {torchdiffeq.__version__}, shared step", solve_torchdiffeq, None))
    if torchode is not None:
        runs.append((f"torchode {torchode.__version__}, step per sample", solve_torchode, None))

    rows = []
    for name, solve, options in runs:
        f = VanDerPol(mu)
        with torch.no_grad():
            solve(f, y0, t, options)  # warm-up
            seconds = []
            for _ in range(args.repeats):
                f.calls = 0
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                with count_host_reads() as reads:
                    y, per_sample = solve(f, y0, t, options)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - start)
        evals = per_sample if per_sample is not None else f.calls
        rows.append((name, evals, f.calls, sorted(seconds)[len(seconds) // 2], reads.count,
                     (y.double() - exact).abs().max().item()))

    shared = rows[0][1]
    lines = [
        f"# Per-sample step control: Van der Pol, mu in [0.1, 30] over {args.samples} samples",
        "",
        f"dopri5, rtol = atol = {TOL:g}, t in [0, {T_END:g}] (5 outputs), float32, device {device}, "
        f"{args.threads} thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}. "
        "Evaluations per sample: a shared step evaluates every sample at every stage, so it is the "
        "number of calls of f; with a step per sample, each sample's own count (mean over the batch). "
        "Host reads: reads of device values by the host during one solve (item/tolist/bool/float/int). "
        f"Time: median of {args.repeats}.",
        "",
        "| solver | evaluations per sample | / shared | calls of f | time (ms) | host reads | max error |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, evals, calls, sec, reads, err in rows:
        lines.append(f"| {name} | {evals:.1f} | {evals / shared:.2f} | {calls} | {sec * 1e3:.1f} | {reads} | {err:.1e} |")
    ratio = min(r[1] for r in rows if "per_sample" in r[0]) / shared
    lines += ["", f"Per-sample control: **{ratio:.2f}x** the shared step's evaluations per sample "
              f"(target <= {TARGET}: {'met' if ratio <= TARGET else 'not met'})."]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
