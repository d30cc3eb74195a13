"""SDE-Net (Kong, Sun and Zhang, ICML 2020) on MNIST against the ResNet and ODE-Net baselines:
test error, misclassification detection and out-of-distribution detection (TNR at 95% TPR,
AUROC, detection accuracy, AUPR in and out), built from run folders.

    python -m neuralode.paper.sdenet --train --scale smoke            # train what is missing, then build
    python -m neuralode.paper.sdenet --train --ood svhn                # the paper's OOD set (online)
    python -m neuralode.paper.sdenet outputs/paper/runs/cpu            # any run folders

With ``--train`` the three experiments (``sdenet_mnist``, and Table 1's ``mnist_resnet`` and
``mnist_odenet``, whose runs are shared with Table 1) are trained at ``--scale`` into
``outputs/paper/runs/<scale>/<experiment>/``. Each run's checkpoint is then scored on MNIST's
test images and on the out-of-distribution set (``--ood``: Animal-MNIST offline by default, SVHN
as in the paper when online, or generated images), and the scores' metrics are kept beside the run
in ``uncertainty-<ood>.json`` so that rebuilding the table costs nothing.

The uncertainty score is the paper's: the largest class probability of the prediction, the
softmax averaged over ``samples`` Brownian paths for SDE-Net (10, as the reference's
``test_detection.py``; one deterministic pass for the baselines). In-distribution (or correctly
classified) images are the positives. SDE-Net's own diffusion output g(h0) is scored too, as an
extra row ("SDE-Net, sigma").
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from neuralode.paper.common import (SCALES, claims_table, epochs_scale, fmt, markdown_table, scale_settings,
                                    shown_path, smoke_threads, verdict, write_table_files)
from neuralode.paper.runs import (RunFolderError, RunSpec, collect_runs, config_values, read_finished_run,
                                  run_config, runs_root, table_main, table_parser)
from neuralode.paper import table1
from neuralode.paper.table1 import epoch_ends

#: The experiments of the table (configs/experiment/<name>.yaml) and the row each one fills.
EXPERIMENTS = {"mnist_resnet": "ResNet", "mnist_odenet": "ODE-Net", "sdenet_mnist": "SDE-Net"}
MODELS = tuple(EXPERIMENTS.values())
OOD_DEFAULT = "animal_mnist"
METRICS = ("tnr_at_tpr95", "auroc", "detection_accuracy", "aupr_in", "aupr_out")

#: The authors' code run once on MNIST vs SVHN (test accuracy, then the five metrics in percent),
#: as reported in the authors' repository (Lingkai-Kong/SDE-Net, issue 7, 2020-09-09: a user's run
#: of README's commands, which the authors attribute to run-to-run variance). The paper's own
#: Table (mean and std of 5 runs) is not quoted here: its text could not be read when this was written.
REFERENCE = {
    "ResNet": {"accuracy": 99.45, "ood": (88.783, 95.939, 92.169, 86.441, 98.434),
               "mis": (89.791, 97.510, 93.041, 99.985, 34.000)},
    "SDE-Net": {"accuracy": 99.27, "ood": (99.372, 99.804, 98.692, 99.483, 99.887),
                "mis": (92.544, 97.525, 94.485, 99.979, 41.739)},
}

SETTINGS = {"scale": "scale", "train_limit": "data.train_limit", "synthetic": "data.synthetic",
            "samples": "model.eval_samples", "steps": "model.net.steps"}


# --------------------------------------------------------------------------- detection metrics
def _average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum over distinct thresholds (higher
    score = predicted positive)."""
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # the last index of each distinct score
    tps = np.cumsum(positive)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def detection_metrics(positive: Iterable[float], negative: Iterable[float]) -> dict[str, float | None]:
    """How well ``score >= threshold`` tells positives (in-distribution, or correctly classified)
    from negatives: TNR at the threshold that keeps 95% of the positives, AUROC (ties count half),
    the best detection accuracy 0.5 (TPR + TNR) over thresholds, and the average precision with
    the positives as positives (AUPR in) and with the negatives as positives and the score negated
    (AUPR out). All None when either side is empty."""
    pos, neg = np.sort(np.asarray(list(positive), float)), np.sort(np.asarray(list(negative), float))
    if len(pos) == 0 or len(neg) == 0:
        return {name: None for name in METRICS}
    threshold = pos[int(np.floor(0.05 * len(pos)))]  # at least 95% of the positives are >= it
    tnr = float(np.mean(neg < threshold))
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    auroc = float(np.sum(below + 0.5 * ties) / (len(pos) * len(neg)))
    candidates = np.r_[np.unique(np.r_[pos, neg]), np.inf]
    tpr = 1 - np.searchsorted(pos, candidates, side="left") / len(pos)
    tnr_all = np.searchsorted(neg, candidates, side="left") / len(neg)
    accuracy = float(np.max(0.5 * (tpr + tnr_all)))
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return {"tnr_at_tpr95": tnr, "auroc": auroc, "detection_accuracy": accuracy,
            "aupr_in": _average_precision(scores, labels), "aupr_out": _average_precision(-scores, 1 - labels)}


# --------------------------------------------------------------------------- scoring a trained run
def _images(loader: Iterable, limit: int | None):
    seen = 0
    for batch in loader:
        x, y = batch[0], batch[1]
        if limit is not None:
            x, y = x[: limit - seen], y[: limit - seen]
        if len(x) == 0:
            break
        seen += len(x)
        yield x, y
        if limit is not None and seen >= limit:
            break


def score_run(run_dir: Path, ood: str, ood_root: str | Path, eval_images: int | None, ood_images: int | None,
              samples: int | None = None, batch_size: int = 500) -> dict[str, Any]:
    """Score a run's checkpoint on MNIST's test images and ``ood_images`` of the OOD set: its test
    error and the detection metrics (and SDE-Net's diffusion-score metrics)."""
    import torch
    from torch.utils.data import DataLoader

    from neuralode.data.ood import ood_dataset
    from neuralode.paper.runs import load_trained_or_exit

    task, data, state = load_trained_or_exit(run_dir)
    stochastic = hasattr(task, "predict")
    n_samples = (samples or task.eval_samples) if stochastic else 1
    torch.manual_seed(0)  # the Brownian paths: the same numbers on every rebuild

    def confidence(x: torch.Tensor):
        with torch.no_grad():
            probs = task.predict(x, n_samples) if stochastic else torch.softmax(task(x), dim=1)
            sigma = task.net.sigma(x) if stochastic else None
        return probs, sigma

    conf_in, correct, sigma_in, conf_out, sigma_out = [], [], [], [], []
    for x, y in _images(data.eval_dataloader(), eval_images):
        probs, sigma = confidence(x)
        conf_in.append(probs.max(dim=1).values)
        correct.append(probs.argmax(dim=1) == y)
        if sigma is not None:
            sigma_in.append(sigma)
    ood_set = ood_dataset(ood, ood_root, download=True, limit=ood_images)
    for x, _ in _images(DataLoader(ood_set, batch_size=batch_size), None):
        probs, sigma = confidence(x)
        conf_out.append(probs.max(dim=1).values)
        if sigma is not None:
            sigma_out.append(sigma)
    c_in, ok, c_out = torch.cat(conf_in).numpy(), torch.cat(correct).numpy(), torch.cat(conf_out).numpy()
    result = {
        "ood": ood, "step": state["progress"]["step"], "samples": n_samples, "eval_images": int(len(c_in)),
        "ood_images": int(len(c_out)), "test_error": float(1 - ok.mean()),
        "ood_metrics": detection_metrics(c_in, c_out),
        "mis_metrics": detection_metrics(c_in[ok], c_in[~ok]),
    }
    if sigma_in:  # high diffusion = out of distribution: the in-distribution score is -sigma
        s_in, s_out = -torch.cat(sigma_in).numpy(), -torch.cat(sigma_out).numpy()
        result["sigma_ood_metrics"] = detection_metrics(s_in, s_out)
        result["sigma_mean"] = {"in": float(-s_in.mean()), "out": float(-s_out.mean())}
    return result


def uncertainty_file(run_dir: Path, ood: str) -> Path:
    return Path(run_dir) / f"uncertainty-{ood}.json"


def ensure_scores(run_dir: Path, ood: str, ood_root: str | Path, eval_images: int | None, ood_images: int | None,
                  samples: int | None = None) -> dict[str, Any]:
    """The run's ``uncertainty-<ood>.json``: reused when it was made for the run's last step with
    the same image limits (and ``samples``), else computed and written."""
    from neuralode.files import write_atomically

    path = uncertainty_file(run_dir, ood)
    wanted = {"eval_limit": eval_images, "ood_limit": ood_images}
    if path.is_file():
        cached = json.loads(path.read_text())
        summary, _ = read_finished_run(Path(run_dir))
        if (cached.get("step") == summary.get("steps") and all(cached.get(k) == v for k, v in wanted.items())
                and samples in (None, cached.get("samples"))):
            return cached
    result = {**score_run(Path(run_dir), ood, ood_root, eval_images, ood_images, samples), **wanted}
    write_atomically(path, json.dumps(result, indent=1) + "\n")
    return result


# --------------------------------------------------------------------------- runs
@dataclass
class Run(table1.Run):
    scores: dict | None = None  # the uncertainty scores of its checkpoint, once computed


def load_run(path: str | Path) -> Run:
    path = Path(path)
    summary, records = read_finished_run(path)
    name = summary.get("name")
    if name not in EXPERIMENTS:
        raise RunFolderError(f"{path}: a run of {name!r}; this table takes runs of {', '.join(EXPERIMENTS)}")
    try:
        settings = config_values(run_config(path), SETTINGS)
    except RunFolderError:
        settings = {}
    return Run(path, EXPERIMENTS[name], summary, records, settings)


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    runs = collect_runs(paths, load_run)
    order = {model: i for i, model in enumerate(MODELS)}
    return sorted(runs, key=lambda run: (order[run.model], str(run.path)))


def step_ms(run: Run) -> float | None:
    """Median training time per optimiser step over the run's epochs, in ms."""
    before, times = 0, []
    for record in epoch_ends(run.records):
        steps, before = record["step"] - before, record["step"]
        if steps > 0 and "epoch_time_s" in record:
            times.append(1000 * record["epoch_time_s"] / steps)
    return statistics.median(times) if times else None


def infer_scale(runs: list[Run]) -> str:
    scales = {run.settings.get("scale") for run in runs}
    if len(scales) == 1 and None not in scales:
        return scales.pop()
    return epochs_scale(run.epochs for run in runs)


# --------------------------------------------------------------------------- the table
OOD_HEADERS = ["model", "score", "epochs", "ms / step", "test error", "TNR at TPR 95%", "AUROC", "detection acc.",
               "AUPR in", "AUPR out"]
MIS_HEADERS = ["model", "score", "TNR at TPR 95%", "AUROC", "detection acc.", "AUPR succ.", "AUPR err."]
OOD_NAMES = {"animal_mnist": "Animal-MNIST (animal silhouettes; offline)", "svhn": "SVHN (the paper's)",
             "synthetic": "generated boxes and stripes (a pipeline check, not a result)"}


def _pct(value: float | None) -> str:
    return fmt(None if value is None else 100 * value, ".1f")


def _reference_row(model: str, kind: str) -> list[str]:
    ref = REFERENCE[model]
    cells = [f"{v:.1f}" for v in ref[kind]]
    if kind == "ood":
        return [f"{model} (authors' code, SVHN)", "max prob.", "-", "-", f"{100 - ref['accuracy']:.2f}%", *cells]
    return [f"{model} (authors' code)", "max prob.", *cells]


def table_rows(runs: list[Run]) -> tuple[list[list[str]], list[list[str]]]:
    ood_rows, mis_rows = [], []
    for model in MODELS:
        mine = [run for run in runs if run.model == model]
        if not mine:
            ood_rows.append([model, "no run", "-", "-", "-", "-", "-", "-", "-", "-"])
        for run in mine:
            s = run.scores or {}
            score = f"max prob. ({s.get('samples', 1)} pass{'es' if s.get('samples', 1) != 1 else ''})"
            error = "-" if s.get("test_error") is None else f"{100 * s['test_error']:.2f}%"
            ms = step_ms(run)
            common = [model, score, str(run.epochs), fmt(ms, ".0f"), error]
            ood_rows.append(common + [_pct((s.get("ood_metrics") or {}).get(m)) for m in METRICS])
            mis_rows.append([model, score] + [_pct((s.get("mis_metrics") or {}).get(m)) for m in METRICS])
            if s.get("sigma_ood_metrics"):
                ood_rows.append([f"{model}", "diffusion g(h0)", str(run.epochs), fmt(ms, ".0f"), error]
                                + [_pct(s["sigma_ood_metrics"].get(m)) for m in METRICS])
        if model in REFERENCE:
            ood_rows.append(_reference_row(model, "ood"))
            mis_rows.append(_reference_row(model, "mis"))
    return ood_rows, mis_rows


def claims(runs: list[Run]) -> list[list[str]]:
    final = {run.model: run.scores for run in runs if run.scores}
    rows = []
    auroc = {m: (s.get("ood_metrics") or {}).get("auroc") for m, s in final.items()}
    if auroc.get("SDE-Net") is not None and auroc.get("ResNet") is not None:
        rows.append(["SDE-Net tells OOD images apart better than ResNet (AUROC)",
                     f"{100 * auroc['SDE-Net']:.1f} vs {100 * auroc['ResNet']:.1f}", "99.8 vs 95.9 (authors' code, SVHN)",
                     verdict(auroc["SDE-Net"] > auroc["ResNet"])])
    error = {m: s.get("test_error") for m, s in final.items()}
    if error.get("SDE-Net") is not None and error.get("ResNet") is not None:
        sde, res = 100 * error["SDE-Net"], 100 * error["ResNet"]
        # The paper's point: the uncertainty costs no accuracy. A lower error than ResNet's keeps it too.
        rows.append(["SDE-Net's test error no worse than ResNet's (by at most 0.2 points or a quarter)",
                     f"{sde:.2f}% vs {res:.2f}%", "0.73% vs 0.55% (authors' code)",
                     verdict(sde - res <= max(0.2, 0.25 * res))])
    return rows


def render(runs: list[Run], scale: str, ood: str, base: Path | None = None) -> str:
    ood_rows, mis_rows = table_rows(runs)
    counts = sorted({(r.scores or {}).get("eval_images") for r in runs} - {None})
    ood_counts = sorted({(r.scores or {}).get("ood_images") for r in runs} - {None})
    lines = [
        f"# SDE-Net: MNIST uncertainty (scale: {scale})",
        "",
        f"## Out-of-distribution detection: MNIST test images vs {OOD_NAMES.get(ood, ood)}",
        "",
        markdown_table(OOD_HEADERS, ood_rows),
        "## Misclassification detection: correct vs wrong predictions on MNIST's test images",
        "",
        markdown_table(MIS_HEADERS, mis_rows),
        *claims_table(claims(runs)),
        f"Scored on {', '.join(map(str, counts)) or '-'} MNIST test images and {', '.join(map(str, ood_counts)) or '-'} "
        f"out-of-distribution images; metrics in percent, in-distribution (or correct) images as positives. "
        "Score: the largest probability of the prediction (SDE-Net: the softmax averaged over its Brownian passes, "
        "sigma_max 500); 'diffusion g(h0)': SDE-Net's diffusion output, low = in-distribution. The authors' rows are "
        "one run of their code against SVHN (the paper's set), so they compare with ours only when --ood svhn. "
        "TNR at TPR 95%: at the threshold that keeps 95% of the positives (the authors average the thresholds "
        "whose TPR lies in [94%, 96%]).",
        "",
        "Runs:",
        "",
        *[f"- {run.model}: `{shown_path(run.path, base)}`" for run in runs],
        "",
    ]
    return "\n".join(lines)


CSV_HEADERS = ["model", "score", "epochs", "step_ms", "test_error", "ood", *(f"ood_{m}" for m in METRICS),
               *(f"mis_{m}" for m in METRICS), "run"]


def csv_rows(runs: list[Run]) -> list[list]:
    rows = []
    for run in runs:
        s = run.scores or {}
        base = [run.model, "max_prob", run.epochs, step_ms(run), s.get("test_error"), s.get("ood")]
        rows.append(base + [(s.get("ood_metrics") or {}).get(m) for m in METRICS]
                    + [(s.get("mis_metrics") or {}).get(m) for m in METRICS] + [str(run.path)])
        if s.get("sigma_ood_metrics"):
            rows.append([run.model, "diffusion", *base[2:]] + [s["sigma_ood_metrics"].get(m) for m in METRICS]
                        + [None] * len(METRICS) + [str(run.path)])
    return rows


# --------------------------------------------------------------------------- command line
def run_specs(scale: str) -> list[RunSpec]:
    """The table's runs at ``scale``: ``outputs/paper/runs/<scale>/<experiment>`` (the baselines'
    are Table 1's)."""
    return [RunSpec(name, runs_root(scale) / name, threaded=True) for name in EXPERIMENTS]


def main(argv: list[str] | None = None) -> None:
    parser = table_parser("sdenet", __doc__.split("\n\n")[0], "the three runs", "data.synthetic=true")
    parser.add_argument("--ood", default=OOD_DEFAULT, choices=["animal_mnist", "svhn", "synthetic"],
                        help="the out-of-distribution set (default: animal_mnist, offline; svhn: the paper's, online)")
    parser.add_argument("--ood-root", default="data", help="where the out-of-distribution set is kept (default: data)")
    args = parser.parse_args(argv)
    if not args.runs and not args.train:
        parser.error("give run folders, or --train to train the table's runs at --scale")
    smoke_threads(args.scale or "smoke")

    def find_and_score(paths: list[Path]) -> list[Run]:
        runs = find_runs(paths)
        scale = args.scale or infer_scale(runs)
        limits = scale_settings("sdenet", scale if scale in SCALES else "paper")
        for run in runs:
            run.scores = ensure_scores(run.path, args.ood, args.ood_root, limits.get("eval_images"),
                                       limits.get("ood_images"))
        return runs

    def write_table(runs: list[Run], folder: Path, scale: str) -> tuple[Path, Path]:
        return write_table_files(folder, "sdenet", render(runs, scale, args.ood, base=Path.cwd()), CSV_HEADERS,
                                 csv_rows(runs))

    from neuralode.data.ood import OODUnavailableError

    try:
        table_main(args, run_specs, find_and_score, infer_scale, write_table)
    except OODUnavailableError as error:  # one message that says how to get the set
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
