"""What every paper artefact shares: the scales, the output folder, tables and plots, and the
training runs behind them (found, trained, reused or resumed, loaded).

Each builder (``table1.py``, ``memory.py``, ``fig1.py`` ...) writes its files into
``outputs/paper/`` (or ``--out``), says in every table which scale produced it, and exposes
``main(argv)`` for ``python -m neuralode.paper.<name>`` and the ``table``/``figure``
subcommands.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (also on machines without a display)

from neuralode.files import read_json
from neuralode.paper.registry import SCALES
from neuralode.source import REPO_ROOT


def scale_settings(artefact: str, scale: str) -> dict[str, Any]:
    """What ``artefact`` (fig1, fig3, ...) draws or sweeps at ``scale``: configs/paper_scales.yaml."""
    from omegaconf import OmegaConf

    table = OmegaConf.load(REPO_ROOT / "configs" / "paper_scales.yaml")
    return OmegaConf.to_container(table[check_scale(scale)][artefact])


def root_dir() -> Path:
    """The repository root, or ``$NEURALODE_ROOT`` (as in configs/paths/default.yaml)."""
    return Path(os.environ.get("NEURALODE_ROOT") or REPO_ROOT)


def paper_dir() -> Path:
    """Where the paper artefacts go by default: ``outputs/paper``."""
    return root_dir() / "outputs" / "paper"


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise SystemExit(f"error: unknown scale {scale!r}; use one of: {', '.join(SCALES)} (make ... SCALE=<scale>)")
    return scale


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="smoke", choices=SCALES,
                        help="smoke: CPU, minutes; cpu: the paper's claims on a CPU; paper: the full recipe (GPU). "
                             "Default: smoke")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/paper)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")


def out_dir(path: Path | None) -> Path:
    folder = Path(path) if path is not None else paper_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def smoke_threads(scale: str) -> None:
    """Below paper scale use one CPU thread (unless OMP_NUM_THREADS says otherwise): the tensors
    are small and the CPU often shared, where two threads fighting are many times slower than one."""
    import torch

    if scale != "paper" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are printed with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


#: The header of every artefact's claims table; REPORT.md gathers the rows of all of them.
CLAIM_HEADERS = ["claim", "ours", "paper", "verdict"]


def claims_table(rows: Sequence[Sequence[Any]]) -> list[str]:
    """The markdown lines of a claims table (none when there is nothing to judge yet)."""
    return [markdown_table(CLAIM_HEADERS, rows)] if rows else []


def verdict(holds: bool) -> str:
    return "yes" if holds else "no"


def write_csv(path: Path, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)


def fmt(value: float | None, spec: str = ".3g", missing: str = "-") -> str:
    """A number for a table cell, ``-`` when it was not measured."""
    return missing if value is None else format(value, spec)


def epochs_scale(epochs: Iterable[int]) -> str:
    """The scale a table states for runs that did not all reach the full recipe."""
    epochs = sorted(set(epochs)) or [0]
    span = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
    return f"custom ({span} epochs)"


def shown_path(path: Path, base: Path | None = None) -> str:
    """``path`` relative to ``base`` where it lies below it, else as it is."""
    if base is not None:
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)


# --------------------------------------------------------------------------- tables of runs
class RunFolderError(ValueError):
    """A folder that is not a finished training run of the models a table takes."""


Run = TypeVar("Run")


def read_finished_run(path: Path) -> tuple[dict, list[dict]]:
    """A finished run's ``summary.json`` and its ``metrics.jsonl`` records."""
    from neuralode.train.loggers import read_metrics

    summary_file, metrics_file = path / "summary.json", path / "metrics.jsonl"
    if not summary_file.is_file() or not metrics_file.is_file():
        raise RunFolderError(f"{path} is not a finished run: it needs summary.json and metrics.jsonl "
                             "(an unfinished run can be continued with resume=true hydra.run.dir=<dir>)")
    return read_json(summary_file), read_metrics(metrics_file)


def run_config(path: Path):
    """A run's settings: ``.hydra/config.yaml`` (a command-line run), else the config stored in
    its checkpoint; in today's keys (an old run's ``solver.adjoint`` as ``solver.gradient``)."""
    from omegaconf import OmegaConf

    from neuralode.train.config import upgrade_stored_config

    config_file = Path(path) / ".hydra" / "config.yaml"
    if config_file.is_file():
        return upgrade_stored_config(OmegaConf.load(config_file))
    ckpt = checkpoint_in(Path(path))
    if ckpt is None:
        raise RunFolderError(f"{path} has neither .hydra/config.yaml nor a checkpoint: its settings are unknown")
    from neuralode.train.checkpoint import load_checkpoint

    return OmegaConf.create(upgrade_stored_config(load_checkpoint(ckpt, map_location="cpu")["config"]))


def config_values(config, keys: dict[str, str]) -> dict[str, Any]:
    """``{name: config value at dotted path}`` for ``keys = {name: path}`` (None where absent)."""
    from omegaconf import OmegaConf

    return {name: OmegaConf.select(config, where, default=None, throw_on_resolution_failure=False)
            for name, where in keys.items()}


def collect_runs(paths: Iterable[str | Path], load_run: Callable[[Path], Run]) -> list[Run]:
    """Runs in the given folders: each folder is a run, or is searched for runs (a sweep), where
    a run that ``load_run`` refuses is skipped (another experiment of a shared sweep folder)."""
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
            except RunFolderError as error:
                print(f"skipped: {error}", file=sys.stderr)
    return runs


class Stages:
    """Progress of a long paper command, one stderr line a stage with the time so far, so that a
    figure that measures for minutes is not silent (issue 32: fig3 sat 180 s without a line)."""

    def __init__(self, name: str):
        self.name, self.started = name, time.perf_counter()

    def __call__(self, text: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.started:6.1f} s] {text}", file=sys.stderr, flush=True)


def write_table_files(folder: Path, name: str, markdown: str, headers: Sequence[str],
                      rows: Sequence[Sequence[Any]]) -> tuple[Path, Path]:
    """``<folder>/<name>.md`` and ``<folder>/<name>.csv``."""
    folder = Path(folder)
    md, csv_path = folder / f"{name}.md", folder / f"{name}.csv"
    md.write_text(markdown)
    write_csv(csv_path, headers, rows)
    return md, csv_path


def table_parser(name: str, description: str, trains: str, example: str) -> argparse.ArgumentParser:
    """The command line of a table built from runs: run folders, or ``--train`` at ``--scale``
    (``trains``: what --train trains; ``example``: a --set override)."""
    parser = argparse.ArgumentParser(prog=f"python -m neuralode table {name}", description=description)
    parser.add_argument("runs", nargs="*", type=Path, help="run folders, or folders holding runs (a sweep)")
    parser.add_argument("--train", action="store_true",
                        help=f"train (or reuse) {trains} at --scale under outputs/paper/runs/<scale>/")
    parser.add_argument("--scale", default=None, choices=SCALES,
                        help="the scale to train at and to print (default with --train: smoke; else inferred)")
    add_training_args(parser, f"--train, e.g. --set {example}")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/paper)")
    return parser


def table_main(args: argparse.Namespace, specs: Callable[[str], list["RunSpec"]],
               find_runs: Callable[[list[Path]], list[Run]], infer_scale: Callable[[list[Run]], str],
               write_table: Callable[[list[Run], Path, str], tuple[Path, Path]]) -> None:
    """Build a table from the parsed ``args`` of :func:`table_parser`: with ``--train``, make sure
    the runs ``specs(scale)`` exist (:func:`ensure_runs`), then find the runs, write the table and
    print it. A run that failed to train leaves its cell empty and the exit status 1."""
    started = time.perf_counter()
    paths, failed = list(args.runs), []
    if args.train:
        wanted = specs(args.scale or "smoke")
        failed = ensure_runs(wanted, args.scale or "smoke", args.overrides, args.jobs)
        paths += [spec.run_dir for spec in wanted if spec not in failed]
    try:
        runs = find_runs(paths)
    except RunFolderError as error:
        raise SystemExit(f"error: {error}") from None
    scale = args.scale or ("smoke" if args.train else infer_scale(runs))
    md, csv_path = write_table(runs, out_dir(args.out), scale)
    print(md.read_text())
    print(f"wrote {md} and {csv_path} in {time.perf_counter() - started:.0f} s")
    exit_if_failed(failed)


# --------------------------------------------------------------------------- training runs
@dataclass(frozen=True)
class RunSpec:
    """One training run an artefact needs: ``python -m neuralode train experiment=<experiment>
    scale=<scale> <overrides>`` into ``run_dir``. The scale's recipe lives in
    ``configs/recipe/<scale>/<experiment>.yaml``, so this command alone re-trains the run exactly."""

    experiment: str
    run_dir: Path
    overrides: tuple[str, ...] = ()
    #: Its steps are big enough (convolutions on images) for intra-op threads to pay: trained
    #: with fewer runs than cores, it takes the spare cores (an SDE-Net step on MNIST: 1.75x
    #: faster on 2 threads than 1; a latent ODE's step is slower on 2).
    threaded: bool = False

    def command(self, scale: str, extra: Sequence[str] = (), resume: bool = False) -> list[str]:
        return [sys.executable, "-m", "neuralode", "train", f"experiment={self.experiment}", f"scale={scale}",
                *self.overrides, *extra, "trainer.progress_bar=false", f"hydra.run.dir={self.run_dir}",
                *(["resume=true"] if resume else [])]


def runs_root(scale: str) -> Path:
    """Where the artefacts' training runs go: ``outputs/paper/runs/<scale>``."""
    return paper_dir() / "runs" / scale


def default_jobs() -> int:
    """Training runs at once: one per CPU core (each single-threaded), or one on a GPU machine."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


def record_runs(trained: Sequence[RunSpec], reused: Sequence[RunSpec]) -> None:
    """Append ``trained <run_dir>`` / ``reused <run_dir>`` lines to ``$NEURALODE_RUN_LOG`` when
    set: ``make``'s timing record counts them, so that REPORT.md can tell a target's wall time
    that trained its runs from one that only reused them."""
    path = os.environ.get("NEURALODE_RUN_LOG")
    if path:
        with open(path, "a") as log:
            log.writelines(f"{kind} {spec.run_dir}\n" for kind, group in (("trained", trained), ("reused", reused))
                           for spec in group)


def ensure_runs(specs: Sequence[RunSpec], scale: str, extra: Sequence[str] = (), jobs: int | None = None) -> list[RunSpec]:
    """Make every run of ``specs`` a finished run at ``scale``: reuse it when it has
    ``summary.json``, resume it from ``last.pt``, else train it; ``extra`` overrides go to every
    run. Up to ``jobs`` runs train at once as separate processes (their output in
    ``<run_dir>.log`` when more than one); one that fails does not stop the others.
    Returns the specs that failed."""
    jobs = default_jobs() if jobs is None else max(1, jobs)
    reused = [spec for spec in specs if (spec.run_dir / "summary.json").is_file()]
    todo = [spec for spec in specs if spec not in reused]
    for spec in reused:
        print(f"reusing {spec.run_dir}", flush=True)
    record_runs(trained=todo, reused=reused)
    if not todo:
        return []
    parallel = min(jobs, len(todo))
    cores_each = max(1, (os.cpu_count() or 1) // parallel)

    def train_one(spec: RunSpec) -> bool:
        # Below paper scale the tensors are mostly small and the runs many: one thread each (two
        # threads on a small run are slower) unless the run is ``threaded``. At paper scale the
        # cores are shared out. OMP_NUM_THREADS wins.
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(cores_each if scale == "paper" or spec.threaded else 1))
        resume = (spec.run_dir / "last.pt").is_file()
        command = spec.command(scale, extra, resume)
        log = spec.run_dir.parent / f"{spec.run_dir.name}.log"
        print(f"{'resuming' if resume else 'training'} {spec.run_dir}" + (f" (log: {log})" if parallel > 1 else ""),
              flush=True)
        print("$ python " + " ".join(command[1:]), flush=True)
        started = time.perf_counter()
        spec.run_dir.parent.mkdir(parents=True, exist_ok=True)
        if parallel > 1:
            with log.open("a") as out:
                status = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        else:
            status = subprocess.run(command, env=env).returncode
        if status != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-5:]) if parallel > 1 else ""
            print(f"FAILED (exit status {status}): {spec.run_dir}\n{tail}", file=sys.stderr, flush=True)
            return False
        print(f"finished {spec.run_dir} in {time.perf_counter() - started:.0f} s", flush=True)
        return True

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        finished = list(pool.map(train_one, todo))
    return [spec for spec, ok in zip(todo, finished) if not ok]


def ensure_runs_or_exit(specs: Sequence[RunSpec], scale: str, extra: Sequence[str] = (), jobs: int | None = None) -> None:
    """:func:`ensure_runs`, stopping with the failed runs named when any failed."""
    exit_if_failed(ensure_runs(specs, scale, extra, jobs))


def exit_if_failed(failed: Sequence[RunSpec]) -> None:
    """Stop with exit status 1, naming the runs that ``failed`` to train, if any did."""
    if failed:
        raise SystemExit("error: training failed for " + ", ".join(str(spec.run_dir) for spec in failed))


def add_training_args(parser: argparse.ArgumentParser, trained: str = "every run") -> None:
    """--set (extra Hydra overrides) and --jobs (runs trained at once)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"extra Hydra override for {trained} (repeatable)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs trained at once, each in its own process (default: one per CPU core; 1 with a GPU)")


def checkpoint_in(run_dir: Path) -> Path | None:
    """A run folder's ``last.pt``, else its ``best.pt``, else None."""
    return next((run_dir / n for n in ("last.pt", "best.pt") if (run_dir / n).is_file()), None)


def load_trained(path: str | Path):
    """The task of a run folder (its last.pt, else best.pt) or checkpoint file, in eval mode on
    CPU, with its data module and the checkpoint (see :func:`neuralode.train.run.load_trained`)."""
    from neuralode.train.run import load_trained as load_checkpoint_file

    path = Path(path)
    ckpt = checkpoint_in(path) if path.is_dir() else path
    if ckpt is None or not ckpt.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint file nor a run folder with last.pt or best.pt")
    return load_checkpoint_file(ckpt)


# --------------------------------------------------------------------------- figures of a trained run
def add_figure_args(parser: argparse.ArgumentParser, trained: str = "the run") -> None:
    """--scale, --set and --jobs (for training ``trained``), --out and --no-tensorboard."""
    parser.add_argument("--scale", default="smoke", choices=SCALES, help="default: smoke")
    add_training_args(parser, f"training {trained}")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/paper)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write the TensorBoard event file")


def load_trained_or_exit(path: str | Path):
    """:func:`load_trained`, or exit with an error that names the missing, damaged or refused
    checkpoint."""
    from neuralode.train.config import UserError

    try:
        return load_trained(path)
    except (FileNotFoundError, UserError) as error:
        raise SystemExit(f"error: {error}") from None


def progress(state: dict) -> str:
    """How far a checkpoint's run trained: ``epoch E, step S``."""
    return f"epoch {state['progress']['epoch']}, step {state['progress']['step']}"


def save_figure(fig, folder: Path, name: str, step: int = 0, tensorboard: bool = True, dpi: int = 120) -> Path:
    """``<folder>/<name>.png``, and the figure in TensorBoard under ``<folder>/tensorboard/<name>``
    (at ``step``); the figure is closed either way."""
    import matplotlib.pyplot as plt

    path = Path(folder) / f"{name}.png"
    fig.savefig(path, dpi=dpi)
    if tensorboard:
        from neuralode.train.loggers import TensorBoardLogger

        logger = TensorBoardLogger(Path(folder) / "tensorboard" / name)
        logger.log_figures({name: fig}, step=step)  # closes the figure
        logger.close()
    else:
        plt.close(fig)
    return path


def write_figure(fig, text: str, folder: Path, name: str, step: int = 0, tensorboard: bool = True) -> dict[str, Path]:
    """``<name>.md`` (``text``) and the figure (:func:`save_figure`) in ``folder``."""
    md = Path(folder) / f"{name}.md"
    md.write_text(text)
    return {"png": save_figure(fig, folder, name, step, tensorboard), "md": md}
