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

import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable

from neuralode.paper.common import (RunFolderError, call, collect_runs, epochs_scale, fmt, markdown_table,
                                    multirun, read_finished_run, reuse_or_resume, runs_root, shown_path,
                                    table_main, table_parser, write_table_files)

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
    summary, records = read_finished_run(path)
    if not records:
        raise RunFolderError(f"{path / 'metrics.jsonl'} is empty: the run never evaluated")
    return Run(path, model_of(path, summary), summary, records)


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Runs in the given folders: each folder is a run, or is searched for runs (a sweep)."""
    runs = collect_runs(paths, load_run)
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
    if min((run.epochs for run in runs), default=0) >= 160:
        return "paper"
    return epochs_scale(run.epochs for run in runs)


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
                         fmt(n["nfe_forward"], ".1f"), fmt(n["nfe_backward"], ".1f")])
    return rows


def render(runs: list[Run], scale: str, base: Path | None = None) -> str:
    """Table 1 as markdown: the table, what each column means, and the runs it came from."""
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
        *[f"- {run.model}: `{shown_path(run.path, base)}`" for run in runs],
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
    return write_table_files(folder, "table1", render(runs, scale, base=Path.cwd()), CSV_HEADERS, csv_rows(runs))


# --------------------------------------------------------------------------- training
def ensure_runs(scale: str, experiments: Iterable[str] = tuple(EXPERIMENTS), overrides: Iterable[str] = (),
                root: Path | None = None) -> list[Path]:
    """Run folders ``<root>/<experiment>`` of finished runs at ``scale``: reused when finished,
    resumed when stopped early, trained by one Hydra multirun when missing."""
    root = runs_root(scale) if root is None else Path(root)
    experiments = list(experiments)
    settings = SCALE_OVERRIDES[scale] + list(overrides)
    # Only the smoke runs are small enough that one CPU thread is the steadier choice.
    train = partial(call, one_thread=scale == "smoke")
    missing = [name for name in experiments
               if not reuse_or_resume(root / name, [f"experiment={name}", *settings], train)]
    if missing:
        print(f"training {', '.join(missing)} at scale {scale} into {root}")
        multirun(root, [f"experiment={','.join(missing)}", *settings], "${name}", train)
    return [root / name for name in experiments]


def main(argv: list[str] | None = None) -> None:
    parser = table_parser("table1", __doc__.split("\n\n")[0], "the four runs", "data.synthetic=true")
    args = parser.parse_args(argv)
    if not args.runs and not args.train:
        parser.error("give run folders, or --train to train Table 1's runs at --scale")
    table_main(args, lambda scale: ensure_runs(scale, overrides=args.overrides), find_runs, infer_scale, write_table)


if __name__ == "__main__":
    main()
