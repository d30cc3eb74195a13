"""Table 1 (MNIST): test error, parameters, memory, time and NFE of MLP, ResNet, RK-Net and
ODE-Net, ours beside the paper's, built from run folders.

    python -m neuralode.paper.table1 --train --scale smoke      # train what is missing, then build
    python -m neuralode table table1 outputs/multirun/<sweep>   # any run folders (or folders of runs)

With ``--train`` the four experiments are trained by one Hydra multirun into
``outputs/paper/runs/<scale>/<experiment>/``; finished runs (with ``summary.json``) are reused
and unfinished ones (``last.pt`` but no summary) resumed. Every number comes from a run's
``summary.json`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from neuralode.paper.common import SCALES, markdown_table, out_dir, paper_dir, write_csv

#: The experiments of Table 1 (configs/experiment/<name>.yaml) and the row each one fills.
EXPERIMENTS = {"mnist_mlp": "MLP", "mnist_resnet": "ResNet", "mnist_rknet": "RK-Net", "mnist_odenet": "ODE-Net"}
MODELS = tuple(EXPERIMENTS.values())

#: The paper's Table 1 (the MLP row is quoted there from LeCun et al. 1998).
PAPER = {
    "MLP": {"error": "1.60%", "params": "0.24M", "memory": "-", "time": "-"},
    "ResNet": {"error": "0.41%", "params": "0.60M", "memory": "O(L)", "time": "O(L)"},
    "RK-Net": {"error": "0.47%", "params": "0.22M", "memory": "O(L~)", "time": "O(L~)"},
    "ODE-Net": {"error": "0.42%", "params": "0.22M", "memory": "O(1)", "time": "O(L~)"},
}

#: Hydra overrides per scale. smoke: 3 short epochs of batch 64 on a CPU (about 2 minutes for
#: all four), 500 test images; paper: the experiments as configured (160 epochs, the reference recipe).
SCALE_OVERRIDES = {
    "smoke": ["trainer.max_epochs=3", "trainer.limit_train_batches=25", "trainer.limit_eval_batches=1",
              "data.batch_size=64", "data.eval_batch_size=500", "trainer.progress_bar=false"],
    "paper": [],
}


class RunFolderError(ValueError):
    """A folder that is not a finished training run of one of Table 1's models."""


@dataclass
class Run:
    """A finished training run: where it is, which row it fills, what it logged."""

    path: Path
    model: str
    summary: dict
    records: list[dict]

    @property
    def epochs(self) -> int:
        return int(self.summary.get("epochs", 0))

    @property
    def steps(self) -> int:
        return int(self.summary.get("steps", 0))


def model_of(path: Path, summary: dict) -> str:
    """Which Table 1 row a run fills: by experiment name, else by its stored config."""
    name = summary.get("name")
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    config_file = path / ".hydra" / "config.yaml"
    if config_file.is_file():
        from omegaconf import OmegaConf

        config = OmegaConf.load(config_file)
        target = str(OmegaConf.select(config, "model.net._target_", default=""))
        adjoint = OmegaConf.select(config, "solver.adjoint", default=True)
        by_class = {"MLP": "MLP", "ResNet": "ResNet", "ODENet": "ODE-Net" if adjoint else "RK-Net"}
        if target.rsplit(".", 1)[-1] in by_class:
            return by_class[target.rsplit(".", 1)[-1]]
    raise RunFolderError(
        f"{path}: cannot tell which Table 1 model this run trained (experiment name {name!r}); "
        f"Table 1 takes runs of {', '.join(EXPERIMENTS)}"
    )


def load_run(path: str | Path) -> Run:
    path = Path(path)
    summary_file, metrics_file = path / "summary.json", path / "metrics.jsonl"
    if not summary_file.is_file() or not metrics_file.is_file():
        raise RunFolderError(f"{path} is not a finished run: it needs summary.json and metrics.jsonl "
                             "(an unfinished run can be continued with resume=true hydra.run.dir=<dir>)")
    summary = json.loads(summary_file.read_text())
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    if not records:
        raise RunFolderError(f"{metrics_file} is empty: the run never evaluated")
    return Run(path, model_of(path, summary), summary, records)


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Runs in the given folders: each folder is a run, or is searched for runs (a sweep)."""
    runs = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise RunFolderError(f"{path} is not a folder; pass run folders or folders that contain runs")
        if (path / "summary.json").is_file():
            runs.append(load_run(path))
            continue
        found = sorted(p.parent for p in path.glob("**/summary.json"))
        if not found:
            raise RunFolderError(f"{path} holds no finished run (no summary.json inside it)")
        for run_dir in found:
            try:
                runs.append(load_run(run_dir))
            except RunFolderError as error:  # other experiments of a shared sweep folder
                print(f"skipped: {error}", file=sys.stderr)
    order = {model: i for i, model in enumerate(MODELS)}
    return sorted(runs, key=lambda run: (order[run.model], str(run.path)))


# --------------------------------------------------------------------------- the numbers
def epoch_ends(records: list[dict]) -> list[dict]:
    """The last record of each epoch: its ``epoch_time_s`` covers the whole epoch's training."""
    last: dict[int, dict] = {}
    for record in records:
        last[record["epoch"]] = record
    return [last[e] for e in sorted(last)]


def run_numbers(run: Run) -> dict[str, Any]:
    """The raw values of a Table 1 row (``None`` where a run did not measure something)."""
    final = run.records[-1]
    ends = epoch_ends(run.records)
    steps_before, epoch_times, step_times = 0, [], []
    for record in ends:
        steps = record["step"] - steps_before
        steps_before = record["step"]
        if steps > 0 and "epoch_time_s" in record:
            epoch_times.append(record["epoch_time_s"])
            step_times.append(record["epoch_time_s"] / steps)
    saved = [r["peak_saved_tensors_mb"] for r in run.records if "peak_saved_tensors_mb" in r]
    cuda = [r["cuda_max_allocated_mb"] for r in run.records if "cuda_max_allocated_mb" in r]
    return {
        "model": run.model,
        "run": str(run.path),
        "epochs": run.epochs,
        "steps": run.steps,
        "test_error": final.get("test_error"),
        "params": run.summary.get("num_parameters"),
        "saved_mb": max(saved) if saved else None,
        "cuda_mb": max(cuda) if cuda else None,
        "epoch_s": statistics.median(epoch_times) if epoch_times else None,
        "step_s": statistics.median(step_times) if step_times else None,
        "nfe_forward": final.get("nfe_forward"),
        "nfe_backward": final.get("nfe_backward"),
        "device": run.summary.get("device"),
    }


def infer_scale(runs: list[Run]) -> str:
    """``paper`` when every run did the full 160 epochs, else the epochs they did."""
    epochs = sorted({run.epochs for run in runs}) or [0]
    if epochs[0] >= 160:
        return "paper"
    span = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
    return f"custom ({span} epochs)"


# --------------------------------------------------------------------------- the table
HEADERS = ["model", "epochs (steps)", "test error", "paper", "params", "paper", "peak memory", "paper",
           "time / epoch", "paper", "NFE fwd", "NFE bwd"]


def _memory_cell(n: dict) -> str:
    if n["cuda_mb"] is not None:
        return f"{n['cuda_mb']:.0f} MB CUDA ({n['saved_mb']:.1f} MB saved)" if n["saved_mb"] is not None else f"{n['cuda_mb']:.0f} MB CUDA"
    return "-" if n["saved_mb"] is None else f"{n['saved_mb']:.1f} MB saved"


def _time_cell(n: dict) -> str:
    if n["epoch_s"] is None:
        return "-"
    return f"{n['epoch_s']:.1f} s ({1000 * n['step_s']:.0f} ms/step)"


def _nfe_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table_rows(runs: list[Run]) -> list[list[str]]:
    rows = []
    for model in MODELS:
        paper = PAPER[model]
        mine = [run_numbers(run) for run in runs if run.model == model]
        if not mine:
            rows.append([model, "no run", "-", paper["error"], "-", paper["params"], "-", paper["memory"], "-",
                         paper["time"], "-", "-"])
        for n in mine:
            error = "-" if n["test_error"] is None else f"{100 * n['test_error']:.2f}%"
            params = "-" if n["params"] is None else f"{n['params'] / 1e6:.2f}M"
            rows.append([model, f"{n['epochs']} ({n['steps']})", error, paper["error"], params, paper["params"],
                         _memory_cell(n), paper["memory"], _time_cell(n), paper["time"],
                         _nfe_cell(n["nfe_forward"]), _nfe_cell(n["nfe_backward"])])
    return rows


def render(runs: list[Run], scale: str, base: Path | None = None) -> str:
    """Table 1 as markdown: the table, what each column means, and the runs it came from."""
    def shown(path: Path) -> str:
        if base is not None:
            try:
                return str(path.relative_to(base))
            except ValueError:
                pass
        return str(path)

    devices = sorted({str(run.summary.get("device")) for run in runs})
    lines = [
        f"# Table 1: MNIST (scale: {scale})",
        "",
        markdown_table(HEADERS, table_rows(runs)),
        "Test error: the last evaluation of each run. Memory: peak bytes that a training step's forward "
        "pass saved for backward (and `torch.cuda.max_memory_allocated` on GPU); the paper gives the "
        "growth with depth L or NFE L~ (see memory.md for that measured). Time: training wall time per "
        "epoch (median), per optimiser step in brackets. NFE: function evaluations per training step, "
        "forward and adjoint backward (mean over the last epoch).",
        "",
        f"Devices: {', '.join(devices) if devices else '-'}. Runs:",
        "",
        *[f"- {run.model}: `{shown(run.path)}`" for run in runs],
        "",
    ]
    return "\n".join(lines)


CSV_HEADERS = ["model", "run", "device", "epochs", "steps", "test_error", "paper_test_error", "params", "paper_params",
               "saved_mb", "cuda_mb", "paper_memory", "epoch_s", "step_s", "paper_time", "nfe_forward", "nfe_backward"]


def csv_rows(runs: list[Run]) -> list[list]:
    rows = []
    for run in runs:
        n, paper = run_numbers(run), PAPER[run.model]
        rows.append([n["model"], n["run"], n["device"], n["epochs"], n["steps"], n["test_error"], paper["error"],
                     n["params"], paper["params"], n["saved_mb"], n["cuda_mb"], paper["memory"], n["epoch_s"],
                     n["step_s"], paper["time"], n["nfe_forward"], n["nfe_backward"]])
    return rows


def write_table(runs: list[Run], folder: Path, scale: str) -> tuple[Path, Path]:
    folder = Path(folder)
    md, csv_path = folder / "table1.md", folder / "table1.csv"
    md.write_text(render(runs, scale, base=Path.cwd()))
    write_csv(csv_path, CSV_HEADERS, csv_rows(runs))
    return md, csv_path


# --------------------------------------------------------------------------- training
def runs_root(scale: str) -> Path:
    return paper_dir() / "runs" / scale


def ensure_runs(scale: str, experiments: Iterable[str] = tuple(EXPERIMENTS), overrides: Iterable[str] = (),
                root: Path | None = None) -> list[Path]:
    """Run folders ``<root>/<experiment>`` of finished runs at ``scale``: reused when finished,
    resumed when stopped early, trained by one Hydra multirun when missing."""
    root = runs_root(scale) if root is None else Path(root)
    experiments, overrides = list(experiments), list(overrides)
    settings = SCALE_OVERRIDES[scale] + overrides
    train = [sys.executable, "-m", "neuralode", "train"]
    missing = []
    for name in experiments:
        run_dir = root / name
        if (run_dir / "summary.json").is_file():
            print(f"reusing {run_dir}")
        elif (run_dir / "last.pt").is_file():
            print(f"resuming {run_dir}")
            _call(train + [f"experiment={name}", *settings, "resume=true", f"hydra.run.dir={run_dir}"], scale)
        else:
            missing.append(name)
    if missing:
        print(f"training {', '.join(missing)} at scale {scale} into {root}")
        _call(train + ["-m", f"experiment={','.join(missing)}", *settings,
                       f"hydra.sweep.dir={root}", "hydra.sweep.subdir=${name}"], scale)
    return [root / name for name in experiments]


def _call(command: list[str], scale: str) -> None:
    print("$ " + " ".join(command), flush=True)
    env = dict(os.environ)
    if scale == "smoke":
        # Small tensors on a shared CPU: one thread is steadier (and often faster) than several.
        env.setdefault("OMP_NUM_THREADS", "1")
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise SystemExit(f"error: training failed (exit status {result.returncode}): {' '.join(command)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode table table1", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders, or folders holding runs (a sweep)")
    parser.add_argument("--train", action="store_true",
                        help="train (or reuse) the four runs at --scale under outputs/paper/runs/<scale>/")
    parser.add_argument("--scale", default=None, choices=SCALES,
                        help="the scale to train at and to print (default with --train: smoke; else inferred)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Hydra override for --train, e.g. --set data.synthetic=true (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/paper)")
    args = parser.parse_args(argv)
    if not args.runs and not args.train:
        parser.error("give run folders, or --train to train Table 1's runs at --scale")
    started = time.perf_counter()
    paths = list(args.runs)
    if args.train:
        paths += ensure_runs(args.scale or "smoke", overrides=args.overrides)
    try:
        runs = find_runs(paths)
    except RunFolderError as error:
        raise SystemExit(f"error: {error}") from None
    scale = args.scale or ("smoke" if args.train else infer_scale(runs))
    md, csv_path = write_table(runs, out_dir(args.out), scale)
    print(md.read_text())
    print(f"wrote {md} and {csv_path} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
