"""The training runs behind the paper's artefacts: what each run is (:class:`RunSpec`), training,
resuming or reusing them (:func:`ensure_runs`), finding finished ones in folders
(:func:`collect_runs`), loading a trained one, and tables built from runs (:func:`table_main`).

The runs that more than one artefact reads are named here too: Table 1's MNIST models (Figure 3
and the SDE-Net table reuse them) and Table 2's spirals (Figures 8 and 9 draw them). A figure's
own runs (the flows of Figures 4 and 5, FFJORD's toys) are listed in its module.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from neuralode.files import read_json
from neuralode.paper.common import SCALES, out_dir, paper_dir, scale_settings


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



def add_figure_args(parser: argparse.ArgumentParser, trained: str = "the run") -> None:
    """--scale, --set and --jobs (for training ``trained``), --out and --no-tensorboard."""
    parser.add_argument("--scale", default="smoke", choices=SCALES, help="default: smoke")
    add_training_args(parser, f"training {trained}")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/paper)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write the TensorBoard event file")


# -- the runs that several artefacts read ---------------------------------------------------

#: Table 2's observed points per spiral.
SPIRAL_N_OBS = (30, 50, 100)

#: Table 1's experiments, costliest first: with two runs at a time the ODE-Net trains alone on
#: one core while the other three follow one another on the other (at the cpu scale the ODE-Net
#: takes about as long as the other three together, so the target ends when both cores do).
MNIST_RUNS = ("mnist_odenet", "mnist_odenet_dopri5", "mnist_rknet", "mnist_resnet", "mnist_mlp")


def mnist_runs(scale: str, experiments: Iterable[str] = MNIST_RUNS) -> list[RunSpec]:
    """Table 1's runs at ``scale``: ``outputs/paper/runs/<scale>/<experiment>``, in the order they
    are trained (:data:`MNIST_RUNS`)."""
    ordered = sorted(experiments, key=lambda name: MNIST_RUNS.index(name) if name in MNIST_RUNS else len(MNIST_RUNS))
    # The three convolutional models take the spare core when they train alone (fig3's ODE-Net).
    return [RunSpec(name, runs_root(scale) / name, threaded=name != "mnist_mlp") for name in ordered]


def spiral_run_name(experiment: str, n_obs: int, seed: int) -> str:
    return f"{experiment}_n{n_obs}_s{seed}"


def spiral_experiments(scale: str) -> tuple[str, ...]:
    """The experiments Table 2 trains at ``scale`` (configs/paper_scales.yaml: the cpu scale
    trains only the better RNN baseline)."""
    return tuple(scale_settings("table2", scale)["experiments"])


def spiral_seeds(scale: str) -> dict[int, list[int]]:
    """The training seeds Table 2 trains at ``scale`` for each n (configs/paper_scales.yaml;
    seed 0 where it names none)."""
    seeds = scale_settings("table2", scale).get("seeds", {})
    return {n: list(seeds.get(n, [0])) for n in SPIRAL_N_OBS}


def spiral_training_order(key: tuple[str, int, int]) -> tuple[int, int, int]:
    """Costliest runs first, so that two cores finish together: the latent ODE before the RNNs,
    and more observed points first (a run's time grows with n: at the cpu scale the next-value
    RNN took 317 s at n = 30 and 643 s at n = 100, measured on a quiet CPU)."""
    experiment, n, seed = key
    return (0 if experiment == "latent_ode_spiral" else 1), -n, seed


def spiral_runs(scale: str, n_obs: Iterable[int] = SPIRAL_N_OBS, seeds: Iterable[int] | Mapping[int, Iterable[int]] = (0,),
              experiments: Iterable[str] | None = None, root: Path | None = None) -> dict[tuple, RunSpec]:
    """Table 2's runs at ``scale``, keyed by (experiment, n, seed) in the order they train:
    ``<root>/<experiment>_n<n>_s<seed>`` with ``root`` = ``outputs/paper/runs/<scale>``;
    ``seeds`` the same for every n or one list per n; ``experiments`` defaults to the scale's."""
    root = runs_root(scale) if root is None else Path(root)
    experiments = spiral_experiments(scale) if experiments is None else experiments
    per_n = {n: list(seeds.get(n, [0]) if isinstance(seeds, Mapping) else seeds) for n in n_obs}
    keys = sorted(((e, n, s) for e in experiments for n in n_obs for s in per_n[n]), key=spiral_training_order)
    return {(e, n, s): RunSpec(e, root / spiral_run_name(e, n, s), (f"data.n_obs={n}", f"seed={s}")) for e, n, s in keys}


def ensure_spiral_runs(scale: str, n_obs: Iterable[int] = SPIRAL_N_OBS, seeds: Iterable[int] = (0,),
                experiments: Iterable[str] | None = None, overrides: Iterable[str] = (),
                jobs: int | None = None, root: Path | None = None) -> dict[tuple[str, int, int], Path]:
    """Finished run folders of Table 2 at ``scale`` (trained, resumed or reused), keyed by
    (experiment, n, seed); stops with an error when one fails to train."""
    specs = spiral_runs(scale, n_obs, seeds, experiments, root)
    ensure_runs_or_exit(list(specs.values()), scale, list(overrides), jobs)
    return {key: spec.run_dir for key, spec in specs.items()}
