"""Train each MNIST model of Table 1 (and SDE-Net) for a few steps and compare speed, NFE and memory.

    python scripts/bench_mnist.py                 # generated stand-in images, 20 steps each
    python scripts/bench_mnist.py --real --steps 50 --batch-size 128
    python scripts/bench_mnist.py --experiments mnist_odenet --arithmetic --device cuda

Every model runs through the shared trainer (``python -m neuralode train`` with a step limit),
each in a fresh process so that the process's peak RSS is its own. Columns: steps/s of
training (data loading included, evaluation excluded), forward/backward NFE per step, the
bytes the forward pass saved for backward (the memory Table 1 is about) and peak RSS. A last line
sets SDE-Net's time per training step (6 Euler-Maruyama steps through which it backpropagates, and
its diffusion net on clean and perturbed images) against the ODE-Net's (dopri5, adjoint).
``--arithmetic`` trains each model once per setting of neuralode/train/precision.py that the
device has (fp32; channels-last; bf16; on CUDA also TF32 and fp16) and prints them side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

EXPERIMENTS = ("mnist_mlp", "mnist_resnet", "mnist_rknet", "mnist_odenet", "sdenet_mnist")
#: --arithmetic: a label and the trainer overrides of each setting (the CUDA-only ones last).
ARITHMETIC = {
    "fp32": [],
    "channels_last": ["trainer.channels_last=true"],
    "bf16": ["trainer.precision=bf16"],
    "tf32": ["trainer.tf32=true"],
    "tf32+channels_last": ["trainer.tf32=true", "trainer.channels_last=true"],
    "fp16+channels_last": ["trainer.precision=fp16", "trainer.channels_last=true"],
}
CUDA_ONLY = ("tf32", "tf32+channels_last", "fp16+channels_last")


def run_one(experiment: str, steps: int, batch_size: int, real: bool, device: str, threads: int,
            extra: list[str] = ()) -> dict:
    """Train one experiment for ``steps`` steps in this process and return its figures."""
    import torch

    from neuralode.train.config import compose
    from neuralode.train.run import train

    torch.set_num_threads(threads)
    overrides = [
        f"experiment={experiment}", f"device={device}", f"data.batch_size={batch_size}",
        f"trainer.max_steps={steps}", "trainer.limit_eval_batches=1", "trainer.progress_bar=false",
        "logger.tensorboard=false", *extra,
    ]
    if real:
        overrides.append(f"data.train_limit={batch_size * steps}")  # one epoch of exactly `steps` batches
    else:
        overrides += ["data.synthetic=true", f"data.synthetic_train_size={batch_size * steps}"]
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train(compose("train", overrides), run_dir)
    final = summary["final"]
    return {
        "experiment": experiment,
        "parameters": summary["num_parameters"],
        "steps_per_s": steps / final["epoch_time_s"],
        "nfe_forward": final.get("nfe_forward"),
        "nfe_backward": final.get("nfe_backward"),
        "peak_saved_tensors_mb": final["peak_saved_tensors_mb"],
        "peak_rss_mb": final["peak_rss_mb"],
        "cuda_max_allocated_mb": final.get("cuda_max_allocated_mb"),
        "train_loss": final["train_loss"],
    }


def table(rows: list[dict]) -> str:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [f"{'model':<28}{'params':>10}{'steps/s':>9}{'NFE fwd':>9}{'NFE bwd':>9}{'saved MB':>10}{'RSS MB':>9}{'loss':>8}"]
    for r in rows:
        lines.append(
            f"{r['experiment'] + (' ' + r['setting'] if r.get('setting') else ''):<28}{r['parameters']:>10,}{r['steps_per_s']:>9.2f}{fmt(r['nfe_forward'], '.1f'):>9}"
            f"{fmt(r['nfe_backward'], '.1f'):>9}{r['peak_saved_tensors_mb']:>10.1f}{r['peak_rss_mb']:>9.0f}{r['train_loss']:>8.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="training steps per model (default 20)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--real", action="store_true", help="real MNIST (data/ or the offline path) instead of generated images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: comparable numbers)")
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    parser.add_argument("--arithmetic", action="store_true",
                        help="each model under every precision/layout setting the device has (see the docstring)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra overrides for every run")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one experiment, print JSON
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.batch_size, args.real, args.device, args.threads, args.set)))
        return
    settings = {"": []}
    if args.arithmetic:
        settings = {k: v for k, v in ARITHMETIC.items() if args.device.startswith("cuda") or k not in CUDA_ONLY}
    rows = []
    for experiment in args.experiments:
        for label, overrides in settings.items():
            command = [sys.executable, __file__, "--one", experiment, "--steps", str(args.steps), "--batch-size",
                       str(args.batch_size), "--device", args.device, "--threads", str(args.threads),
                       *(["--real"] if args.real else []), *(["--set", *args.set, *overrides] if args.set or overrides else [])]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"{experiment} {label} failed:\n{result.stderr}")
            rows.append({**json.loads(result.stdout.strip().splitlines()[-1]), "setting": label})
            print(f"{experiment} {label}: done", file=sys.stderr)
    data = "real MNIST" if args.real else "generated images"
    print(f"{args.steps} training steps, batch {args.batch_size}, {data}, {args.device}, {args.threads} thread(s)\n")
    print(table(rows))
    ms = {r["experiment"]: 1000 / r["steps_per_s"] for r in rows if r["setting"] in ("", "fp32")}
    if "sdenet_mnist" in ms and "mnist_odenet" in ms:
        print(f"\nSDE-Net vs ODE-Net, time per training step: {ms['sdenet_mnist']:.0f} ms vs {ms['mnist_odenet']:.0f} ms "
              f"({ms['sdenet_mnist'] / ms['mnist_odenet']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
