"""Table 1 (MNIST): test error, parameters, memory, time and NFE of MLP, ResNet, RK-Net and
ODE-Net, ours beside the paper's, built from run folders.

    python -m neuralode.paper.table1 --train --scale smoke      # train what is missing, then build
    python -m neuralode table table1 outputs/multirun/<sweep>   # any run folders (or folders of runs)

With ``--train`` the four experiments are trained at ``--scale`` (their recipes:
``configs/recipe/<scale>/mnist_*.yaml``) into ``outputs/paper/runs/<scale>/<experiment>/``;
finished runs (with ``summary.json``) are reused and unfinished ones (``last.pt`` but no
summary) resumed. Every number comes from a run's ``summary.json``, ``metrics.jsonl`` and
stored config.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from neuralode.paper.common import (claims_table, epochs_scale, fmt, markdown_table, shown_path, verdict,
                                    write_table_files)
from neuralode.paper.runs import (RunFolderError, collect_runs, config_values, mnist_runs, read_finished_run,
                                  run_config, table_main, table_parser)

#: The experiments of Table 1 (configs/experiment/<name>.yaml) and the row each one fills.
EXPERIMENTS = {"mnist_mlp": "MLP", "mnist_resnet": "ResNet", "mnist_rknet": "RK-Net", "mnist_odenet": "ODE-Net",
               "mnist_odenet_dopri5": "ODE-Net"}
MODELS = tuple(dict.fromkeys(EXPERIMENTS.values()))

#: The paper's Table 1 (the MLP row is quoted there from LeCun et al. 1998).
PAPER = {
    "MLP": {"error": "1.60%", "params": "0.24M", "memory": "-", "time": "-"},
    "ResNet": {"error": "0.41%", "params": "0.60M", "memory": "O(L)", "time": "O(L)"},
    "RK-Net": {"error": "0.47%", "params": "0.22M", "memory": "O(L~)", "time": "O(L~)"},
    "ODE-Net": {"error": "0.42%", "params": "0.22M", "memory": "O(1)", "time": "O(L~)"},
}

#: The ODE-Net's solver in the paper (Section 3: the implicit Adams method of LSODE/VODE, through
#: scipy): the core's adaptive Adams. An ODE-Net run with another method is a labelled variant row
#: (mnist_odenet_dopri5: the torchdiffeq example's dopri5), which the claims leave out.
PAPER_METHOD = "adams"

#: The settings of a run that the table states: name -> dotted config key.
SETTINGS = {"target": "model.net._target_", "method": "solver.method", "rtol": "solver.rtol",
            "gradient": "solver.gradient", "scale": "scale",
            "train_limit": "data.train_limit", "augment": "data.augment", "batch_size": "data.batch_size"}


@dataclass
class Run:
    """A finished training run: where it is, which row it fills, what it logged and its settings."""

    path: Path
    model: str
    summary: dict
    records: list[dict]
    settings: dict

    @property
    def epochs(self) -> int:
        return int(self.summary.get("epochs", 0))

    @property
    def steps(self) -> int:
        return int(self.summary.get("steps", 0))

    @property
    def variant(self) -> str:
        """``[method]`` for an ODE-Net solved otherwise than the paper's; empty for the paper's own
        (and for a run whose config is not at hand)."""
        method = self.settings.get("method")
        return f"[{method}]" if self.model == "ODE-Net" and method and method != PAPER_METHOD else ""

    @property
    def label(self) -> str:
        return f"{self.model} {self.variant}" if self.variant else self.model

    @property
    def solver(self) -> str:
        """The run's solver, tolerance and gradient, for the models that have one."""
        method = self.settings.get("method")
        if self.model not in ("RK-Net", "ODE-Net") or not method:
            return "-"
        rtol = self.settings.get("rtol")
        return f"{method}{'' if rtol is None else f' {float(rtol):g}'}, {self.settings.get('gradient') or 'adjoint'}"


def model_of(path: Path, summary: dict, settings: dict) -> str:
    """Which Table 1 row a run fills: by experiment name, else by its stored config."""
    name = summary.get("name")
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    target = str(settings.get("target") or "")
    # An ODENet is the RK-Net when it backpropagates through the solver, the ODE-Net with the
    # adjoint (the default); other gradient strategies fill no row.
    odenet = {"direct": "RK-Net", "adjoint": "ODE-Net"}.get(settings.get("gradient") or "adjoint")
    by_class = {"MLP": "MLP", "ResNet": "ResNet", **({"ODENet": odenet} if odenet else {})}
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
    try:
        settings = config_values(run_config(path), SETTINGS)
    except RunFolderError:
        settings = {}
    return Run(path, model_of(path, summary, settings), summary, records, settings)


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Runs in the given folders: each folder is a run, or is searched for runs (a sweep)."""
    runs = collect_runs(paths, load_run)
    order = {model: i for i, model in enumerate(MODELS)}
    return sorted(runs, key=lambda run: (order[run.model], run.variant, str(run.path)))


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
        "model": run.label,
        "solver": run.solver,
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
    """The scale the runs were trained at, when they all say the same; else ``paper`` when every
    run did the full 160 epochs, else the epochs they did."""
    scales = {run.settings.get("scale") for run in runs}
    if len(scales) == 1 and None not in scales:
        return scales.pop()
    if min((run.epochs for run in runs), default=0) >= 160:
        return "paper"
    return epochs_scale(run.epochs for run in runs)


# --------------------------------------------------------------------------- the table
HEADERS = ["model", "solver", "epochs (steps)", "test error", "paper", "params", "paper", "peak memory", "paper",
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
            rows.append([model, "-", "no run", "-", paper["error"], "-", paper["params"], "-", paper["memory"], "-",
                         paper["time"], "-", "-"])
        for n in mine:
            error = "-" if n["test_error"] is None else f"{100 * n['test_error']:.2f}%"
            params = "-" if n["params"] is None else f"{n['params'] / 1e6:.2f}M"
            rows.append([n["model"], n["solver"], f"{n['epochs']} ({n['steps']})", error, paper["error"], params, paper["params"],
                         _memory_cell(n), paper["memory"], _time_cell(n), paper["time"],
                         fmt(n["nfe_forward"], ".1f"), fmt(n["nfe_backward"], ".1f")])
    return rows


def claims(runs: list[Run]) -> list[list[str]]:
    """The paper's Table 1 claims, each with our numbers and a verdict (where the runs allow one),
    judged on the paper's own solver: variant rows are left out."""
    final = {run.model: run_numbers(run) for run in runs if not run.variant}  # the last run of each model
    error = {m: n["test_error"] for m, n in final.items() if n["test_error"] is not None}
    rows = []
    if {"ODE-Net", "ResNet"} <= error.keys():
        ode, res = 100 * error["ODE-Net"], 100 * error["ResNet"]
        # "Close": within a quarter of ResNet's error or 0.2 points, whichever is larger.
        close = abs(ode - res) <= max(0.2, 0.25 * res)
        rows.append(["ODE-Net's test error close to ResNet's", f"{ode:.2f}% vs {res:.2f}%", "0.42% vs 0.41%",
                     verdict(close)])
    params = {m: n["params"] for m, n in final.items() if n["params"]}
    if {"ODE-Net", "ResNet"} <= params.keys():
        ratio = params["ODE-Net"] / params["ResNet"]
        rows.append(["ODE-Net has about a third of ResNet's parameters", f"{ratio:.2f}x", "0.22M / 0.60M = 0.37x",
                     verdict(0.25 <= ratio <= 0.45)])
    if "MLP" in error and len(error) > 1:
        worst = max(error, key=error.get)
        rows.append(["the MLP has the highest test error", f"highest: {worst} ({100 * error[worst]:.2f}%)",
                     "MLP 1.60%", verdict(worst == "MLP")])
    return rows


def training_note(runs: list[Run]) -> str:
    """What each run trained on, against the paper's 60,000 images for 160 epochs."""
    parts = []
    for run in runs:
        limit = run.settings.get("train_limit")
        images = "60,000" if limit is None else f"{min(int(limit), 60000):,}"
        parts.append(f"{run.label} {images} images x {run.epochs} epochs")
    return ("Training (the paper: all 60,000 training images, 160 epochs, lr x0.1 at epochs 60/100/140): "
            + "; ".join(parts) + ". Test error on the 10,000 test images unless a run limited them.")


def render(runs: list[Run], scale: str, base: Path | None = None) -> str:
    """Table 1 as markdown: the table, the claims with verdicts, what each column means, and the
    runs it came from."""
    devices = sorted({str(run.summary.get("device")) for run in runs})
    lines = [
        f"# Table 1: MNIST (scale: {scale})",
        "",
        markdown_table(HEADERS, table_rows(runs)),
        training_note(runs),
        "",
        *claims_table(claims(runs)),
        "Test error: the last evaluation of each run. Memory: peak bytes that a training step's forward "
        "pass saved for backward (and `torch.cuda.max_memory_allocated` on GPU); the paper gives the "
        "growth with depth L or NFE L~ (see memory.md for that measured). Time: training wall time per "
        "epoch (median), per optimiser step in brackets. NFE: function evaluations (field calls) per "
        "training step, forward and adjoint backward (mean over the last epoch); an Adams step makes two, a "
        "dopri5 step six. Solver: the paper's ODE-Net used the implicit Adams method of LSODE/VODE (Section 3), "
        "here the core's adaptive Adams-Bashforth-Moulton; a row marked [method] is a variant, left out of the "
        "claims. fig3.md solves the trained ODE-Net with scipy's LSODA as a cross-check.",
        "",
        f"Devices: {', '.join(devices) if devices else '-'}. Runs:",
        "",
        *[f"- {run.label}: `{shown_path(run.path, base)}`" for run in runs],
        "",
    ]
    return "\n".join(lines)


CSV_HEADERS = ["model", "solver", "params", "test_error", "epochs", "steps", "train_images", "paper_test_error",
               "paper_params", "saved_mb", "cuda_mb", "paper_memory", "epoch_s", "step_s", "paper_time", "nfe_forward",
               "nfe_backward", "device", "run"]


def csv_rows(runs: list[Run]) -> list[list]:
    rows = []
    for run in runs:
        n, paper = run_numbers(run), PAPER[run.model]
        limit = run.settings.get("train_limit")
        rows.append([n["model"], n["solver"], n["params"], n["test_error"], n["epochs"], n["steps"],
                     60000 if limit is None else min(int(limit), 60000), paper["error"], paper["params"],
                     n["saved_mb"], n["cuda_mb"], paper["memory"], n["epoch_s"], n["step_s"], paper["time"],
                     n["nfe_forward"], n["nfe_backward"], n["device"], n["run"]])
    return rows


def write_table(runs: list[Run], folder: Path, scale: str) -> tuple[Path, Path]:
    return write_table_files(folder, "table1", render(runs, scale, base=Path.cwd()), CSV_HEADERS, csv_rows(runs))


# --------------------------------------------------------------------------- training


def main(argv: list[str] | None = None) -> None:
    parser = table_parser("table1", __doc__.split("\n\n")[0], "the four runs", "data.synthetic=true")
    args = parser.parse_args(argv)
    if not args.runs and not args.train:
        parser.error("give run folders, or --train to train Table 1's runs at --scale")
    table_main(args, mnist_runs, find_runs, infer_scale, write_table)


if __name__ == "__main__":
    main()
