"""Table 2 (spirals): predictive RMSE of the RNN baseline and the latent ODE for n = 30, 50 and
100 observed points, ours beside the paper's, built from run folders.

    python -m neuralode.paper.table2 --train --scale smoke      # train what is missing, then build
    python -m neuralode table table2 outputs/multirun/<sweep>   # any run folders (or folders of runs)

With ``--train`` the runs (the scale's models and seeds, from configs/paper_scales.yaml, x three n) are
trained at ``--scale`` (their recipes: ``configs/recipe/<scale>/*_spiral*.yaml``) into
``outputs/paper/runs/<scale>/<experiment>_n<n>_s<seed>/``; finished runs (with ``summary.json``)
are reused and unfinished ones (``last.pt`` but no summary) resumed. Every number comes from a
run's ``summary.json``, ``metrics.jsonl`` and stored config. Figures 8 and 9 train (or reuse)
their runs with :func:`ensure_runs` here.

Two RNN baselines, both fair per the paper (25 units, the time gap as an input, Gaussian NLL,
the same optimiser): ``rnn_spiral`` reads out the next value, ``rnn_spiral_residual`` the
change from the last observed value. The verdict compares the latent ODE with the better one;
the cpu scale trains only the better one (the change from the last value), to fit its budget.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from neuralode.paper.common import (SCALES, RunFolderError, RunSpec, claims_table, collect_runs, verdict, config_values, ensure_runs_or_exit,
                                    epochs_scale, fmt, markdown_table, read_finished_run, run_config, runs_root, scale_settings,
                                    shown_path, table_main, table_parser, write_table_files)

RNN, RNN_RESIDUAL, LATENT = "RNN", "RNN (change from last value)", "latent ODE"
#: The experiments of Table 2 (configs/experiment/<name>.yaml) and the row each one fills.
EXPERIMENTS = {"rnn_spiral": RNN, "rnn_spiral_residual": RNN_RESIDUAL, "latent_ode_spiral": LATENT}
MODELS = tuple(EXPERIMENTS.values())
N_OBS = (30, 50, 100)

#: The paper's Table 2: predictive RMSE on the extrapolated points (one RNN row for both of ours).
PAPER_RNN = {30: 0.3937, 50: 0.3202, 100: 0.1813}
PAPER = {RNN: PAPER_RNN, RNN_RESIDUAL: PAPER_RNN, LATENT: {30: 0.1642, 50: 0.1502, 100: 0.1346}}
#: The latent ODE's range in the paper, for the verdict.
PAPER_LATENT_RANGE = (0.13, 0.17)

#: Epochs of the full recipe (configs/experiment/*_spiral.yaml).
PAPER_EPOCHS = 500


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


#: The settings of a run that the table states: name -> dotted config key.
SETTINGS = {"target": "model._target_", "residual": "model.net.residual", "seed": "seed", "scale": "scale",
            "n_obs": "data.n_obs", "noise_std": "data.noise_std", "data_seed": "data.seed",
            "n_spirals": "data.n_spirals", "n_eval": "data.n_eval", "n_points": "data.n_points",
            "n_extrap": "data.n_extrap", "dt": "data.dt", "batch_size": "data.batch_size",
            "whole_curve": "data.train_on_whole_curve"}


def run_settings(path: Path) -> dict[str, Any]:
    return config_values(run_config(path), SETTINGS)


def model_of(settings: dict[str, Any]) -> str | None:
    """The row a run fills, from its model's class and settings (None: not a Table 2 model)."""
    target = str(settings["target"])
    if target == "neuralode.tasks.latent.LatentODETask":
        return LATENT
    if target == "neuralode.tasks.latent.RNNTask":
        return RNN_RESIDUAL if settings.get("residual") else RNN
    return None


def load_run(path: str | Path) -> Run:
    path = Path(path)
    summary, records = read_finished_run(path)
    config = run_settings(path)
    model = model_of(config)
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
    """The scale the runs were trained at, when they all say the same; else ``paper`` when every
    run did the full recipe's epochs, else the epochs they did."""
    scales = {run.config.get("scale") for run in runs}
    if len(scales) == 1 and None not in scales:
        return scales.pop()
    if runs and all(int(run.summary.get("epochs", 0)) >= PAPER_EPOCHS for run in runs):
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
    for model in [m for m in MODELS if any(r.model == m for r in runs)]:
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


def mean_rmse(runs: list[Run], model: str, n: int) -> float | None:
    values = [run_numbers(r)["rmse_extrap"] for r in runs if r.model == model and r.n_obs == n]
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def seed_range(runs: list[Run], n: int) -> str:
    """The latent ODE's lowest and highest RMSE over seeds at n, as a note ('' for one seed)."""
    values = [v for r in runs if r.model == LATENT and r.n_obs == n and (v := run_numbers(r)["rmse_extrap"]) is not None]
    return f" (seeds {min(values):.4f}-{max(values):.4f})" if len(values) > 1 else ""


def observed_curve_rmse(runs: list[Run], found: dict[Path, Extrapolation | None], n: int) -> str:
    """The latent ODE's mean RMSE at n on the test spirals that extrapolate on the observed
    curve, as a note for the range claim ('' when no run has a checkpoint)."""
    values = [(ex.rmse(spirals=~ex.unseen), int((~ex.unseen).sum())) for r in runs
              if r.model == LATENT and r.n_obs == n and (ex := found.get(r.path)) is not None and ex.unseen.any()]
    values = [(v, count) for v, count in values if v is not None]
    if not values:  # no run has a checkpoint, or every test spiral stays on the observed curve
        return ""
    return f" ({statistics.mean(v for v, _ in values):.4f} on the {values[0][1]} spirals that stay on the observed curve)"


def claims(runs: list[Run], n_obs: Iterable[int], found: dict[Path, Extrapolation | None] | None = None) -> list[list[str]]:
    """Per n: is the latent ODE below the better RNN, and inside the paper's range? The range
    claim notes the RMSE on the spirals that stay on the observed curve (``found``)."""
    found = found or {}
    rows = []
    low, high = PAPER_LATENT_RANGE
    for n in n_obs:
        latent = mean_rmse(runs, LATENT, n)
        rnns = {m: v for m in (RNN, RNN_RESIDUAL) if (v := mean_rmse(runs, m, n)) is not None}
        if latent is None or not rnns:
            continue
        best = min(rnns, key=rnns.get)
        rows.append([f"n = {n}: latent ODE below the RNN", f"{latent:.4f} vs {best} {rnns[best]:.4f}",
                     f"{PAPER[LATENT][n]:.4f} vs {PAPER_RNN[n]:.4f}", verdict(latent < rnns[best])])
        rows.append([f"n = {n}: latent ODE within the paper's range ({low}-{high})",
                     f"{latent:.4f}{seed_range(runs, n)}{observed_curve_rmse(runs, found, n)}",
                     f"{PAPER[LATENT][n]:.4f}", verdict(low <= latent <= high)])
    return rows


#: Extrapolation horizons (the first h of the points after the window) of the horizon table.
HORIZONS = (10, 25, 50, 100)


@dataclass
class Extrapolation:
    """A trained run's extrapolation on its test spirals, point by point."""

    squared_error: Any  # (B, E) tensor: squared distance to the noise-free spiral, mean over x and y
    unseen: Any  # (B,) bool tensor: the extrapolation reaches past the curve's furthest observed point
    clockwise: Any = None  # (B,) bool tensor: on the clockwise curve (r = 15 / z')

    def rmse(self, horizon: int | None = None, spirals: Any = None) -> float | None:
        """Per-spiral RMSE over the first ``horizon`` points (all: None), averaged over
        ``spirals`` (a bool mask; all: None); None when the mask selects no spiral."""
        error = self.squared_error[:, :horizon].mean(1).sqrt()
        error = error if spirals is None else error[spirals]
        return float(error.mean()) if len(error) else None


def extrapolation(run: Run) -> Extrapolation | None:
    """The run's extrapolation on its test spirals, from its checkpoint (None without one).

    A test spiral is ``unseen`` when its extrapolated points run past the furthest point of its
    curve that any training window observed (see neuralode/data/spirals.py): no model was shown
    that part of the curve."""
    import torch

    from neuralode.paper.common import checkpoint_in, load_trained

    if checkpoint_in(run.path) is None:
        return None
    task, data, _ = load_trained(run.path)
    batch, train = dict(data.eval_dataset().tensors), data.train_dataset().tensors
    with torch.no_grad():
        _, predicted = task.predict(batch)
    observed_end = (train["curve_start"] + train["interp_times"][:, -1]).max()
    unseen = batch["curve_start"] + batch["extrap_times"][:, -1] > observed_end
    return Extrapolation((predicted - batch["extrap_values"]).pow(2).mean(-1), unseen, batch["direction"] < 0)


def extrapolations(runs: list[Run]) -> dict[Path, Extrapolation | None]:
    return {run.path: extrapolation(run) for run in runs}


def horizon_rows(runs: list[Run], found: dict[Path, Extrapolation | None]) -> list[list[str]]:
    rows = []
    for run in runs:
        if (ex := found.get(run.path)) is not None:
            rows.append([run.model, run.n_obs, run.seed] + [fmt(ex.rmse(h) if h <= ex.squared_error.shape[1] else None, ".4f")
                                                            for h in HORIZONS])
    return rows


def coverage_rows(runs: list[Run], found: dict[Path, Extrapolation | None]) -> list[list[str]]:
    rows = []
    for run in runs:
        if (ex := found.get(run.path)) is not None:
            seen = ~ex.unseen
            rows.append([run.model, run.n_obs, run.seed, fmt(ex.rmse(spirals=seen), ".4f"),
                         fmt(ex.rmse(spirals=ex.unseen), ".4f"), fmt(ex.rmse(), ".4f")])
    return rows


def direction_rows(runs: list[Run], found: dict[Path, Extrapolation | None]) -> list[list[str]]:
    rows = []
    for run in runs:
        if (ex := found.get(run.path)) is not None and ex.clockwise is not None:
            rows.append([run.model, run.n_obs, run.seed, fmt(ex.rmse(spirals=~ex.clockwise), ".4f"),
                         fmt(ex.rmse(spirals=ex.clockwise), ".4f"), fmt(ex.rmse(), ".4f")])
    return rows


def coverage_section(runs: list[Run], found: dict[Path, Extrapolation | None]) -> list[str]:
    rows = coverage_rows(runs, found)
    if not rows:
        return []
    ex = next(e for e in found.values() if e is not None)
    unseen, total = int(ex.unseen.sum()), len(ex.unseen)
    by_direction = direction_rows(runs, found)
    direction_table = [] if not by_direction else [
        "By curve: the counter-clockwise spiral `r = 0.3 z` and the clockwise one `r = 15 / z'`, whose radius grows "
        "ever faster along the curve.", "",
        markdown_table(["model", "n", "seed", f"counter-clockwise ({int((~ex.clockwise).sum())} spirals)",
                        f"clockwise ({int(ex.clockwise.sum())})", f"all ({total})"], by_direction), ""]
    if unseen == 0:
        return [f"Training windows start wherever they fit on the curve, so together they observe both curves to "
                f"the end: all {total} test spirals extrapolate onto a part of the curve that training spirals "
                "showed (`data.train_on_whole_curve`).", "", *direction_table]
    return [f"Where the error comes from: the training windows start where the window and its extrapolated points "
            "both fit (as in the authors' example; `data.train_on_whole_curve=false`), so none observes the end of "
            f"either curve. {unseen} of the {total} test spirals extrapolate into that part, which no model was "
            f"shown; the other {total - unseen} stay on the observed curve.", "",
            markdown_table(["model", "n", "seed", f"RMSE, observed curve ({total - unseen} spirals)",
                            f"RMSE, past it ({unseen})", f"all ({total})"], rows), "", *direction_table]


def spiral_definition(runs: list[Run]) -> str:
    """The data as the runs generated it (settings read from their configs)."""
    def d(key: str) -> str:
        return distinct(run.config[key] for run in runs)

    return (f"Spirals ({d('n_spirals')} generated from data seed {d('data_seed')}, the last {d('n_eval')} held out "
            f"for testing): half counter-clockwise `r = 0.3 z` around (5, 0), half clockwise `r = 15 / z'` around "
            f"(-5, 0) (the authors' example's curves); each a window of {d('n_points')} grid points "
            f"{d('dt')} apart in time, subsampled without replacement to n irregular observation times, with "
            f"Gaussian noise of std **{d('noise_std')}** on the observations (the paper does not state its noise); "
            f"the {d('n_extrap')} noise-free grid points after the window are the extrapolation targets. "
            + WINDOW_STARTS[distinct(bool(run.config["whole_curve"]) for run in runs)])


#: Where the runs' training windows start (data.train_on_whole_curve; runs from before it: False).
WINDOW_STARTS = {"True": "Training windows start anywhere they fit on the curve; test windows where their "
                         "extrapolation fits too.",
                 "False": "Every window starts where its extrapolation fits too (the authors' example).",
                 "False, True": "Runs differ in where training windows start (`data.train_on_whole_curve`)."}


def baseline_note(runs: list[Run], scale: str) -> str:
    """Why only one RNN baseline, when the scale trains one (its ``note`` in
    configs/paper_scales.yaml) and the table has only that one."""
    if scale not in SCALES or any(run.model == RNN for run in runs):
        return ""
    return scale_settings("table2", scale).get("note", "")


def render(runs: list[Run], scale: str, base: Path | None = None,
           found: dict[Path, Extrapolation | None] | None = None) -> str:
    """Table 2 as markdown: RMSE beside the paper's, the claims with verdicts, the error by
    horizon and by where the spiral extrapolates (from the checkpoints: ``found``, computed when
    None), the data and seeds, then every run."""
    found = extrapolations(runs) if found is None else found
    n_obs = sorted({run.n_obs for run in runs} | set(N_OBS))
    headers = ["predictive RMSE"] + [h for n in n_obs for h in (f"n = {n}", "paper")]
    several = any(sum(1 for r in runs if (r.model, r.n_obs) == (run.model, run.n_obs)) > 1 for run in runs)
    lines = [
        f"# Table 2: predictive RMSE on spirals (scale: {scale})",
        "",
        markdown_table(headers, table_rows(runs, n_obs)),
        *claims_table(claims(runs, n_obs, found)),
        f"RMSE on the {distinct(run.config['n_extrap'] for run in runs)} grid points after the observed window, "
        "against the noise-free spirals: per test spiral, averaged over the test spirals; the last evaluation "
        "of each run. The latent ODE decodes from the posterior mean of z0; the RNN predicts autoregressively."
        + (" Several seeds: mean ± standard deviation over seeds." if several else ""),
        "",
        *([f"Extrapolation RMSE over the first h of the {distinct(run.config['n_extrap'] for run in runs)} points "
           "after the window (the table above is h = 100; the error grows with the horizon):", "",
           markdown_table(["model", "n", "seed", *(f"h = {h}" for h in HORIZONS)], horizons), ""]
          if (horizons := horizon_rows(runs, found)) else []),
        *coverage_section(runs, found),
        *([note, ""] if (note := baseline_note(runs, scale)) else []),
        spiral_definition(runs) + f" Training seeds: {distinct(run.seed for run in runs)}. "
        f"Devices: {distinct(run.summary.get('device') for run in runs)}.",
        "",
        "Runs (train time: training wall time without evaluation; NFE: function evaluations per training step, "
        "forward and adjoint backward, mean over the last epoch):",
        "",
        markdown_table(RUN_HEADERS, run_rows(runs, base)),
    ]
    return "\n".join(lines)


CSV_HEADERS = ["model", "n_obs", "rmse_extrap", "rmse_interp", "steps", "noise_std", "seed", "epochs", "train_s",
               "paper_rmse_extrap", "elbo", "nfe_forward", "nfe_backward", "device", "run",
               "rmse_extrap_observed_curve", "rmse_extrap_past_it"]


def csv_rows(runs: list[Run], found: dict[Path, Extrapolation | None] | None = None) -> list[list]:
    """One row per run; the last two columns (the RMSE on the spirals that extrapolate on the
    observed curve and past it) are empty for a run without a checkpoint."""
    found = extrapolations(runs) if found is None else found
    rows = []
    for run in runs:
        n, ex = run_numbers(run), found.get(run.path)
        split = [ex.rmse(spirals=~ex.unseen), ex.rmse(spirals=ex.unseen)] if ex is not None else [None, None]
        rows.append([n["model"], n["n_obs"], n["rmse_extrap"], n["rmse_interp"], n["steps"], n["noise_std"], n["seed"],
                     n["epochs"], n["train_s"], PAPER[run.model].get(run.n_obs), n["elbo"], n["nfe_forward"],
                     n["nfe_backward"], n["device"], n["run"], *split])
    return rows


def write_table(runs: list[Run], folder: Path, scale: str) -> tuple[Path, Path]:
    found = extrapolations(runs)
    return write_table_files(folder, "table2", render(runs, scale, base=Path.cwd(), found=found), CSV_HEADERS,
                             csv_rows(runs, found))


# --------------------------------------------------------------------------- training
def run_name(experiment: str, n_obs: int, seed: int) -> str:
    return f"{experiment}_n{n_obs}_s{seed}"


def scale_experiments(scale: str) -> tuple[str, ...]:
    """The experiments Table 2 trains at ``scale`` (configs/paper_scales.yaml: the cpu scale
    trains only the better RNN baseline)."""
    return tuple(scale_settings("table2", scale)["experiments"])


def scale_seeds(scale: str) -> dict[int, list[int]]:
    """The training seeds Table 2 trains at ``scale`` for each n (configs/paper_scales.yaml;
    seed 0 where it names none)."""
    seeds = scale_settings("table2", scale).get("seeds", {})
    return {n: list(seeds.get(n, [0])) for n in N_OBS}


def run_specs(scale: str, n_obs: Iterable[int] = N_OBS, seeds: Iterable[int] | Mapping[int, Iterable[int]] = (0,),
              experiments: Iterable[str] | None = None, root: Path | None = None) -> dict[tuple, RunSpec]:
    """Table 2's runs at ``scale``, keyed by (experiment, n, seed) in the order they train:
    ``<root>/<experiment>_n<n>_s<seed>`` with ``root`` = ``outputs/paper/runs/<scale>``;
    ``seeds`` the same for every n or one list per n; ``experiments`` defaults to the scale's."""
    root = runs_root(scale) if root is None else Path(root)
    experiments = scale_experiments(scale) if experiments is None else experiments
    per_n = {n: list(seeds.get(n, [0]) if isinstance(seeds, Mapping) else seeds) for n in n_obs}
    keys = sorted(((e, n, s) for e in experiments for n in n_obs for s in per_n[n]), key=training_order)
    return {(e, n, s): RunSpec(e, root / run_name(e, n, s), (f"data.n_obs={n}", f"seed={s}")) for e, n, s in keys}


def ensure_runs(scale: str, n_obs: Iterable[int] = N_OBS, seeds: Iterable[int] = (0,),
                experiments: Iterable[str] | None = None, overrides: Iterable[str] = (),
                jobs: int | None = None, root: Path | None = None) -> dict[tuple[str, int, int], Path]:
    """Finished run folders of Table 2 at ``scale`` (trained, resumed or reused), keyed by
    (experiment, n, seed); stops with an error when one fails to train."""
    specs = run_specs(scale, n_obs, seeds, experiments, root)
    ensure_runs_or_exit(list(specs.values()), scale, list(overrides), jobs)
    return {key: spec.run_dir for key, spec in specs.items()}


def training_order(key: tuple[str, int, int]) -> tuple[int, int, int]:
    """Costliest runs first, so that two cores finish together: the latent ODE before the RNNs,
    and more observed points first (a run's time grows with n: at the cpu scale the next-value
    RNN took 317 s at n = 30 and 643 s at n = 100, measured on a quiet CPU)."""
    experiment, n, seed = key
    return (0 if experiment == "latent_ode_spiral" else 1), -n, seed


def main(argv: list[str] | None = None) -> None:
    parser = table_parser("table2", __doc__.split("\n\n")[0], "the runs", "data.noise_std=0.3")
    parser.add_argument("--n", type=int, nargs="+", default=list(N_OBS), help="observed points per spiral (default: 30 50 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="training seeds, for every n (default: the scale's, configs/paper_scales.yaml)")
    args = parser.parse_args(argv)
    if not args.runs and not args.train:
        parser.error("give run folders, or --train to train Table 2's runs at --scale")
    table_main(args, lambda scale: list(run_specs(scale, args.n, args.seeds or scale_seeds(scale)).values()),
               find_runs, infer_scale, write_table)


if __name__ == "__main__":
    main()
