"""Table 2 (spirals): predictive RMSE of the RNN baseline and the latent ODE for n = 30, 50 and
100 observed points, ours beside the paper's, built from run folders.

    python -m neuralode.paper.table2 --train --scale smoke      # train what is missing, then build
    python -m neuralode table table2 outputs/multirun/<sweep>   # any run folders (or folders of runs)

With ``--train`` the six runs (two experiments x three n) are trained by one Hydra multirun into
``outputs/paper/runs/<scale>/<experiment>_n<n>_s<seed>/``; finished runs (with ``summary.json``)
are reused and unfinished ones (``last.pt`` but no summary) resumed. Every number comes from a
run's ``summary.json``, ``metrics.jsonl`` and stored config. Figures 8 and 9 train (or reuse)
their runs with :func:`ensure_runs` here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from neuralode.paper.common import (RunFolderError, call, checkpoint_in, collect_runs, epochs_scale, fmt,
                                    markdown_table, multirun, read_finished_run, reuse_or_resume, runs_root,
                                    shown_path, table_main, table_parser, write_table_files)

#: The experiments of Table 2 (configs/experiment/<name>.yaml) and the row each one fills.
EXPERIMENTS = {"rnn_spiral": "RNN", "latent_ode_spiral": "latent ODE"}
MODELS = tuple(EXPERIMENTS.values())
#: The task class each row trains (the model's ``_target_``), to recognise runs by their config.
TASKS = {"neuralode.tasks.latent.RNNTask": "RNN", "neuralode.tasks.latent.LatentODETask": "latent ODE"}
N_OBS = (30, 50, 100)

#: The paper's Table 2: predictive RMSE on the extrapolated points.
PAPER = {"RNN": {30: 0.3937, 50: 0.3202, 100: 0.1813}, "latent ODE": {30: 0.1642, 50: 0.1502, 100: 0.1346}}

#: Epochs of the full recipe (configs/experiment/*_spiral.yaml); a table is "paper" scale when
#: every run reached them.
PAPER_EPOCHS = {"RNN": 500, "latent ODE": 500}

#: Hydra overrides per scale. smoke: 25 epochs (200 steps) each, a few minutes on one CPU thread
#: for all six runs, far from converged; paper: the experiments as configured (4000 steps).
SCALE_OVERRIDES = {
    "smoke": ["trainer.max_epochs=25", "trainer.progress_bar=false"],
    "paper": [],
}


@dataclass
class Run:
    """A finished spiral run: where it is, which cell it fills, what it logged."""

    path: Path
    model: str
    config: dict  # the run's settings that the table states (see run_settings)
    summary: dict
    records: list[dict]

    @property
    def n_obs(self) -> int:
        return int(self.config["n_obs"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])


def run_settings(path: Path) -> dict[str, Any]:
    """The settings of a run that the table needs, from ``.hydra/config.yaml`` (a command-line
    run) or else from the config stored in its checkpoint."""
    from omegaconf import OmegaConf

    config_file = path / ".hydra" / "config.yaml"
    if config_file.is_file():
        config = OmegaConf.load(config_file)
    else:
        ckpt = checkpoint_in(path)
        if ckpt is None:
            raise RunFolderError(f"{path} has neither .hydra/config.yaml nor a checkpoint: its settings are unknown")
        from neuralode.train.checkpoint import load_checkpoint

        config = OmegaConf.create(load_checkpoint(ckpt, map_location="cpu")["config"])
    keys = {"target": "model._target_", "seed": "seed", "n_obs": "data.n_obs", "noise_std": "data.noise_std",
            "data_seed": "data.seed", "n_spirals": "data.n_spirals", "n_eval": "data.n_eval",
            "n_extrap": "data.n_extrap", "batch_size": "data.batch_size"}
    return {key: OmegaConf.select(config, where, default=None, throw_on_resolution_failure=False)
            for key, where in keys.items()}


def load_run(path: str | Path) -> Run:
    path = Path(path)
    summary, records = read_finished_run(path)
    config = run_settings(path)
    model = TASKS.get(str(config["target"]))
    if model is None:
        raise RunFolderError(f"{path}: not a Table 2 run (it trained {config['target']}); "
                             f"Table 2 takes runs of {', '.join(EXPERIMENTS)}")
    if not records or "test_rmse_extrap" not in records[-1]:
        raise RunFolderError(f"{path / 'metrics.jsonl'} has no test_rmse_extrap: the run never evaluated")
    return Run(path, model, config, summary, records)


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Runs in the given folders: each folder is a run, or is searched for runs (a sweep)."""
    runs = collect_runs(paths, load_run)
    order = {model: i for i, model in enumerate(MODELS)}
    return sorted(runs, key=lambda run: (order[run.model], run.n_obs, run.seed, str(run.path)))


# --------------------------------------------------------------------------- the numbers
def train_time_s(records: list[dict]) -> float:
    """Training wall time: the last ``epoch_time_s`` of each epoch (it covers the epoch so far)."""
    last: dict[int, float] = {}
    for record in records:
        if "epoch_time_s" in record:
            last[record["epoch"]] = record["epoch_time_s"]
    return sum(last.values())


def run_numbers(run: Run) -> dict[str, Any]:
    """The raw values of one run (``None`` where it did not measure something)."""
    final = run.records[-1]
    return {
        "model": run.model, "n_obs": run.n_obs, "seed": run.seed, "run": str(run.path),
        "device": run.summary.get("device"), "epochs": int(run.summary.get("epochs", 0)),
        "steps": int(run.summary.get("steps", 0)), "train_s": train_time_s(run.records),
        "rmse_interp": final.get("test_rmse_interp"), "rmse_extrap": final.get("test_rmse_extrap"),
        "elbo": final.get("test_elbo"), "nfe_forward": final.get("nfe_forward"),
        "nfe_backward": final.get("nfe_backward"), "noise_std": run.config["noise_std"],
    }


def infer_scale(runs: list[Run]) -> str:
    """``paper`` when every run did its full recipe's epochs, else the epochs they did."""
    if runs and all(int(run.summary.get("epochs", 0)) >= PAPER_EPOCHS[run.model] for run in runs):
        return "paper"
    return epochs_scale(int(run.summary.get("epochs", 0)) for run in runs)


def rmse_cell(values: list[float]) -> str:
    """One seed: the value; several: mean +- standard deviation over seeds."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def distinct(values: Iterable[Any]) -> str:
    found = sorted({v for v in values if v is not None}, key=str)
    return ", ".join(str(v) for v in found) if found else "-"


# --------------------------------------------------------------------------- the table
def table_rows(runs: list[Run], n_obs: Iterable[int] = N_OBS) -> list[list[str]]:
    rows = []
    for model in MODELS:
        row = [model]
        for n in n_obs:
            row += [rmse_cell([run_numbers(r)["rmse_extrap"] for r in runs if r.model == model and r.n_obs == n]),
                    f"{PAPER[model][n]:.4f}" if n in PAPER[model] else "-"]
        rows.append(row)
    return rows


RUN_HEADERS = ["model", "n", "seed", "epochs (steps)", "train time", "RMSE interp", "RMSE extrap", "test ELBO",
               "NFE fwd", "NFE bwd", "run"]


def run_rows(runs: list[Run], base: Path | None = None) -> list[list[str]]:
    rows = []
    for run in runs:
        n = run_numbers(run)
        rows.append([n["model"], n["n_obs"], n["seed"], f"{n['epochs']} ({n['steps']})", f"{n['train_s']:.0f} s",
                     fmt(n["rmse_interp"], ".4f"), fmt(n["rmse_extrap"], ".4f"), fmt(n["elbo"], ".1f"),
                     fmt(n["nfe_forward"], ".1f"), fmt(n["nfe_backward"], ".1f"), f"`{shown_path(run.path, base)}`"])
    return rows


def render(runs: list[Run], scale: str, base: Path | None = None) -> str:
    """Table 2 as markdown: RMSE beside the paper's, the data and seeds, then every run."""
    n_obs = sorted({run.n_obs for run in runs} | set(N_OBS))
    headers = ["predictive RMSE"] + [h for n in n_obs for h in (f"n = {n}", "paper")]
    several = any(sum(1 for r in runs if (r.model, r.n_obs) == (run.model, run.n_obs)) > 1 for run in runs)
    noise = distinct(run.config["noise_std"] for run in runs)
    lines = [
        f"# Table 2: predictive RMSE on spirals (scale: {scale})",
        "",
        markdown_table(headers, table_rows(runs, n_obs)),
        f"RMSE on the {distinct(run.config['n_extrap'] for run in runs)} grid points after the observed window, "
        "against the noise-free spirals: per test spiral, averaged over the test spirals; the last evaluation "
        "of each run. The latent ODE decodes from the posterior mean of z0; the RNN predicts autoregressively."
        + (" Several seeds: mean ± standard deviation over seeds." if several else ""),
        "",
        f"Data: {distinct(run.config['n_spirals'] for run in runs)} spirals, the last "
        f"{distinct(run.config['n_eval'] for run in runs)} held out for testing; observation noise std "
        f"**{noise}** (the paper does not state its noise); data seed {distinct(run.config['data_seed'] for run in runs)}. "
        f"Training seeds: {distinct(run.seed for run in runs)}. "
        f"Devices: {distinct(run.summary.get('device') for run in runs)}.",
        "",
        "Runs (train time: training wall time without evaluation; NFE: function evaluations per training step, "
        "forward and adjoint backward, mean over the last epoch):",
        "",
        markdown_table(RUN_HEADERS, run_rows(runs, base)),
    ]
    return "\n".join(lines)


CSV_HEADERS = ["model", "n_obs", "seed", "noise_std", "run", "device", "epochs", "steps", "train_s",
               "rmse_interp", "rmse_extrap", "paper_rmse_extrap", "elbo", "nfe_forward", "nfe_backward"]


def csv_rows(runs: list[Run]) -> list[list]:
    rows = []
    for run in runs:
        n = run_numbers(run)
        rows.append([n["model"], n["n_obs"], n["seed"], n["noise_std"], n["run"], n["device"], n["epochs"], n["steps"],
                     n["train_s"], n["rmse_interp"], n["rmse_extrap"], PAPER[run.model].get(run.n_obs), n["elbo"],
                     n["nfe_forward"], n["nfe_backward"]])
    return rows


def write_table(runs: list[Run], folder: Path, scale: str) -> tuple[Path, Path]:
    return write_table_files(folder, "table2", render(runs, scale, base=Path.cwd()), CSV_HEADERS, csv_rows(runs))


# --------------------------------------------------------------------------- training
def run_name(experiment: str, n_obs: int, seed: int) -> str:
    """A spiral run's folder name; the multirun writes the same through ``hydra.sweep.subdir``."""
    return f"{experiment}_n{n_obs}_s{seed}"


RUN_NAME = "${name}_n${data.n_obs}_s${seed}"  # run_name in Hydra's interpolation
SWEEP_SUBDIR = f"hydra.sweep.subdir={RUN_NAME}"


def ensure_runs(scale: str, n_obs: Iterable[int] = N_OBS, seeds: Iterable[int] = (0,),
                experiments: Iterable[str] = tuple(EXPERIMENTS), overrides: Iterable[str] = (),
                root: Path | None = None) -> dict[tuple[str, int, int], Path]:
    """Run folders ``<root>/<experiment>_n<n>_s<seed>`` of finished runs at ``scale``, keyed by
    (experiment, n, seed): reused when finished, resumed when stopped early, the missing ones
    trained by Hydra multiruns (one when nothing is there yet)."""
    root = runs_root(scale) if root is None else Path(root)
    settings = SCALE_OVERRIDES[scale] + list(overrides)
    wanted = [(e, n, s) for e in experiments for n in n_obs for s in seeds]
    missing = []
    for experiment, n, seed in wanted:
        run_dir = root / run_name(experiment, n, seed)
        if not reuse_or_resume(run_dir, [f"experiment={experiment}", f"data.n_obs={n}", f"seed={seed}", *settings],
                               call):
            missing.append((experiment, n, seed))
    for experiments_, ns, seeds_ in product_groups(missing):
        print(f"training {','.join(experiments_)} for n = {','.join(map(str, ns))}, seeds {','.join(map(str, seeds_))} "
              f"at scale {scale} into {root}")
        multirun(root, [f"experiment={','.join(experiments_)}", f"data.n_obs={','.join(map(str, ns))}",
                        f"seed={','.join(map(str, seeds_))}", *settings], RUN_NAME, call)
    return {key: root / run_name(*key) for key in wanted}


def product_groups(combos: list[tuple[str, int, int]]) -> list[tuple[list[str], list[int], list[int]]]:
    """Cover (experiment, n, seed) combinations with few full products, each one multirun:
    experiments missing the same (n, seed) pairs share a group; a group whose pairs are not a
    full product of its n and seeds is split by seed."""
    pairs_of: dict[str, set[tuple[int, int]]] = {}
    for experiment, n, seed in combos:
        pairs_of.setdefault(experiment, set()).add((n, seed))
    by_pairs: dict[frozenset, list[str]] = {}
    for experiment, pairs in pairs_of.items():
        by_pairs.setdefault(frozenset(pairs), []).append(experiment)
    groups = []
    for pairs, experiments in by_pairs.items():
        ns, seeds = sorted({n for n, _ in pairs}), sorted({s for _, s in pairs})
        if len(pairs) == len(ns) * len(seeds):
            groups.append((experiments, ns, seeds))
        else:
            groups += [(experiments, sorted(n for n, s in pairs if s == seed), [seed]) for seed in seeds]
    return groups


def main(argv: list[str] | None = None) -> None:
    parser = table_parser("table2", __doc__.split("\n\n")[0], "the runs", "data.noise_std=0.3")
    parser.add_argument("--n", type=int, nargs="+", default=list(N_OBS), help="observed points per spiral (default: 30 50 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    args = parser.parse_args(argv)
    if not args.runs and not args.train:
        parser.error("give run folders, or --train to train Table 2's runs at --scale")
    table_main(args, lambda scale: list(ensure_runs(scale, args.n, args.seeds, overrides=args.overrides).values()),
               find_runs, infer_scale, write_table)


if __name__ == "__main__":
    main()
