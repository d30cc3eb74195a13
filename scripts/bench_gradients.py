"""Backprop through the solver against the adjoint: time and NFE of one training step per model family.

    python scripts/bench_gradients.py                          # every family, about 3 minutes on one core
    python scripts/bench_gradients.py --families cnf ffjord --steps 5

For each experiment the config is composed as ``python -m neuralode train`` would, once with
``solver.gradient=direct`` and once with ``solver.gradient=adjoint``, from the same seed: both start
from the same weights and see the same batches. A step is what the trainer does (forward,
backward, optimizer step); batches are drawn before timing, so data loading is excluded. After
warm-up steps, the median wall time of the timed steps is reported with the mean forward and
backward NFE per step. Writes the table to outputs/bench/gradients.md as well.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

OUTPUT = Path(__file__).resolve().parents[1] / "outputs" / "bench" / "gradients.md"


@dataclass(frozen=True)
class Case:
    family: str
    experiment: str
    steps: int  # timed steps unless --steps says otherwise: few where a step takes seconds
    overrides: tuple[str, ...] = ()
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.experiment


CASES = (
    Case("latent_ode", "latent_ode_spiral", 10, ("data.n_obs=100",), label="latent_ode_spiral (n_obs=100)"),
    # The adjoint here takes about 10 s a step (thousands of backward evaluations).
    Case("latent_ode", "latent_ode_poisson", 3),
    Case("cnf", "cnf_density_matching", 20, ("model.flow.field.units=32",), label="cnf_density_matching (units 32)"),
    Case("cnf", "cnf_toy2d", 20),
    Case("ffjord", "ffjord_toy2d", 20),
    # Generated images, so the benchmark runs offline; a small batch keeps a step near a second.
    Case("mnist", "mnist_odenet", 10, ("data.synthetic=true", "data.batch_size=32", "data.synthetic_train_size=256")),
)
FAMILIES = tuple(dict.fromkeys(case.family for case in CASES))


def compose_case(case: Case, gradient: str | None):
    """The config the trainer would get; ``gradient=None`` keeps the experiment's own choice."""
    from neuralode.train.config import compose

    overrides = [f"experiment={case.experiment}", "device=cpu", *case.overrides]
    if gradient is not None:
        overrides.append(f"solver.gradient={gradient}")
    return compose("train", overrides)


def time_steps(case: Case, gradient: str, warmup: int, steps: int) -> dict:
    """Median seconds and mean NFE per training step of ``case`` under one gradient choice."""
    import hydra

    from neuralode.ode import collect_stats
    from neuralode.train.run import build_task_and_data
    from neuralode.train.seeding import seed_everything
    from neuralode.train.evaluation import move_to_device

    cfg = compose_case(case, gradient)
    seed_everything(cfg.seed)  # same weights and batches for both gradient choices
    task, data = build_task_and_data(cfg.model, cfg.data)
    optimizer = hydra.utils.instantiate(cfg.optim.optimizer, _convert_="all")(task.parameters())
    clip = cfg.trainer.grad_clip_norm
    loader = data.train_dataloader(generator=torch.Generator().manual_seed(cfg.seed))
    device = torch.device("cpu")
    # Drawn up front so that the timed loop holds only the step; cycled when the epoch is short.
    batches = [move_to_device(b, device) for b in itertools.islice(itertools.cycle(loader), warmup + steps)]

    task.train()
    seconds, nfe_forward, nfe_backward = [], [], []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        with collect_stats() as stats:
            loss = task.training_step(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(task.parameters(), clip)
        optimizer.step()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            seconds.append(elapsed)
            nfe_forward.append(stats.nfe_forward)
            nfe_backward.append(stats.nfe_backward)
    return {
        "s_per_step": statistics.median(seconds),
        "nfe_forward": statistics.mean(nfe_forward),
        "nfe_backward": statistics.mean(nfe_backward),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| family | experiment | gradient | s/step | NFE fwd | NFE bwd | backprop speedup |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        gradient = r["gradient"] + (" (default)" if r["default"] else "")
        speedup = f"{r['speedup']:.2f}x" if "speedup" in r else ""
        lines.append(
            f"| {r['family']} | {r['experiment']} | {gradient} | {r['s_per_step']:.3f} | "
            f"{r['nfe_forward']:.1f} | {r['nfe_backward']:.1f} | {speedup} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="timed steps per experiment and gradient (default: 3-20 per experiment, fewer where a step is slow)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: comparable numbers)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")

    torch.set_num_threads(args.threads)
    rows = []
    started = time.perf_counter()
    for case in (c for c in CASES if c.family in args.families):
        default_gradient = compose_case(case, None).solver.gradient
        steps = args.steps or case.steps
        pair = {}
        for gradient in ("direct", "adjoint"):
            label = "backprop" if gradient == "direct" else gradient
            pair[label] = {"family": case.family, "experiment": case.name, "gradient": label,
                           "default": gradient == default_gradient, **time_steps(case, gradient, args.warmup, steps)}
            print(f"{case.name} {label}: {pair[label]['s_per_step']:.3f} s/step", flush=True)
        # How many times faster a step is when backpropagating through the solver.
        pair["backprop"]["speedup"] = pair["adjoint"]["s_per_step"] / pair["backprop"]["s_per_step"]
        rows += [pair["backprop"], pair["adjoint"]]
    total = time.perf_counter() - started

    header = (f"Wall time per training step (forward + backward + optimizer step, median of the timed steps after "
              f"{args.warmup} warm-up step(s)), CPU, {args.threads} thread(s); NFE per step, mean. "
              f"\"(default)\" marks the gradient the experiment's config uses; backprop speedup = adjoint s/step / "
              f"backprop s/step. Benchmark wall time {total:.0f} s.")
    report = f"{header}\n\n{markdown(rows)}\n"
    print("\n" + report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
