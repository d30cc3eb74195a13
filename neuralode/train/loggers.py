"""What a run writes besides checkpoints: metrics.jsonl, summary.json and TensorBoard events;
:class:`RunLoggers` is the trainer's one handle on all of them."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from neuralode.files import read_json_lines, write_atomically
from neuralode.train.config import flatten

log = logging.getLogger("neuralode.train.trainer")  # the run's log lines, under the trainer's name


def write_json(path: str | Path, obj: Any) -> None:
    write_atomically(path, json.dumps(obj, indent=2, default=str) + "\n")


class MetricsFile:
    """``metrics.jsonl``: one JSON object per evaluation, appended and flushed as it happens."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def rewrite(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace the file by ``records`` (on resume: drop what came after the checkpoint)."""
        write_atomically(self.path, "".join(json.dumps(record) + "\n" for record in records))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (or of the one inside a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return read_json_lines(path)


class TensorBoardLogger:
    """Scalars, figures, the config as text and the final hparams, in the run directory."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # imported when used: it is slow to import

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def log_figures(self, figures: Mapping[str, Any], step: int) -> None:
        import matplotlib.pyplot as plt

        for name, figure in figures.items():
            self.writer.add_figure(f"figures/{name}", figure, step, close=False)
            plt.close(figure)

    def log_text(self, tag: str, text: str) -> None:
        # Indented by four spaces, TensorBoard's markdown shows it verbatim.
        self.writer.add_text(tag, "\n".join("    " + line for line in text.splitlines()))

    def log_hparams(self, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The run's settings beside its final metrics (the HPARAMS tab), in this run's own
        event file rather than a sub-directory as ``SummaryWriter.add_hparams`` would."""
        from torch.utils.tensorboard.summary import hparams

        params = {key: _hparam_value(value) for key, value in params.items()}
        metrics = {f"hparam/{key}": float(value) for key, value in metrics.items() if _is_finite_number(value)}
        experiment, session_start, session_end = hparams(params, metrics)
        for summary in (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value)

    def close(self) -> None:
        self.writer.close()


class RunLoggers:
    """A run's records as it trains (rank 0 only): the log line and ``metrics.jsonl`` of every
    evaluation, TensorBoard scalars and figures, and at the end the hparams beside the final metrics.

    ``history`` is the records a resumed run keeps (those up to its checkpoint); ``resumed_at``
    its step (``None`` for a fresh run), from which TensorBoard drops what came later.
    """

    def __init__(self, run_dir: Path, settings, history: list[dict[str, Any]], resumed_at: int | None,
                 config: Mapping[str, Any]):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.metrics = MetricsFile(run_dir / "metrics.jsonl")
        if resumed_at is not None or self.metrics.path.exists():
            self.metrics.rewrite(history)  # drop records newer than the checkpoint (or a dead start's)
        self.tensorboard = None
        if settings.tensorboard:
            self.tensorboard = TensorBoardLogger(run_dir, purge_step=None if resumed_at is None else resumed_at + 1)
            if resumed_at is None and config:
                from omegaconf import OmegaConf

                self.tensorboard.log_text("config", OmegaConf.to_yaml(config))

    def step_loss(self, loss: float, step: int) -> None:
        if self.tensorboard is not None and step % self.settings.log_every_n_steps == 0:
            self.tensorboard.log_scalar("train/loss_step", loss, step)

    def record(self, record, figures: Callable[[], Mapping[str, Any]] | None) -> None:
        """One evaluation's :class:`~neuralode.train.records.Record`; ``figures`` draws the task's figures."""
        self.metrics.append(record.as_json())
        log.info(record.summary_line())
        if self.tensorboard is None:
            return
        for tag, value in record.scalars().items():
            self.tensorboard.log_scalar(tag, value, record.step)
        if figures is not None and self.settings.log_figures:
            self.tensorboard.log_figures(figures(), record.step)

    def finish(self, config: Mapping[str, Any], num_parameters: int, final) -> None:
        """TensorBoard's HPARAMS entry: the run's settings beside ``final``'s metrics (the last
        :class:`~neuralode.train.records.Record`, or None: no evaluation this process, no entry)."""
        if self.tensorboard is not None and final is not None:
            metrics = final.measured()
            hparams = {k: v for k, v in flatten(config).items() if k.split(".")[0] in HPARAM_GROUPS}
            self.tensorboard.log_hparams({**hparams, "num_parameters": num_parameters}, metrics)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


#: The config groups shown in TensorBoard's HPARAMS tab.
HPARAM_GROUPS = ("name", "seed", "model", "data", "solver", "optim", "trainer")


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # None, lists, empty dicts


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class ProgressLines:
    """Progress as log lines, for a run whose output goes to a file (a cluster job, ``make run >
    log``): tqdm turns itself off without a terminal, so an epoch would be silent to its end.
    A line every ``every_n_steps`` steps or ``every_s`` seconds, whichever comes first: the
    epoch, the batch, the step, loss/accuracy/NFE, steps/s and the epoch's time left."""

    def __init__(self, every_n_steps: int, every_s: float = 60.0, clock: Callable[[], float] | None = None):
        import time

        self.every_n_steps, self.every_s = every_n_steps, every_s
        self.clock = clock or time.monotonic
        self.start = self.last = self.clock()
        self.start_batch = self.last_batch = 0

    def begin(self, batch: int) -> None:
        self.start = self.last = self.clock()
        self.start_batch = self.last_batch = batch

    def update(self, desc: str, batch: int, total: int, step: int, scalars: dict[str, float]) -> str | None:
        """The line logged after training batch ``batch`` of ``total`` (None when none is due)."""
        now = self.clock()
        if batch - self.last_batch < self.every_n_steps and now - self.last < self.every_s and batch < total:
            return None
        self.last, self.last_batch = now, batch
        rate = (batch - self.start_batch) / max(now - self.start, 1e-9)
        left = (total - batch) / rate if rate > 0 else math.inf
        shown = " ".join(f"{k} {v}" for k, v in progress_postfix(scalars).items())
        line = (f"{desc} batch {batch}/{total} step {step}: {shown}, {rate:.2f} steps/s, epoch done in "
                f"{_duration(left)}")
        log.info(line)
        return line


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress_postfix(scalars: dict[str, float]) -> dict[str, str]:
    """What the progress bar shows after a training step: loss, accuracy, NFE forward/backward."""
    postfix = {"loss": f"{scalars['loss']:.4f}"}
    if "accuracy" in scalars:
        postfix["acc"] = f"{scalars['accuracy']:.3f}"
    if scalars["n_solves"]:
        postfix["nfe"] = f"{scalars['nfe_forward']}/{scalars['nfe_backward']}"
    return postfix
