"""The training loop every experiment shares, readable top to bottom.

It knows a :class:`~neuralode.tasks.Task` (loss and metrics) and a
:class:`~neuralode.data.DataModule` (batches), never a particular model. Per optimiser step it
counts the ODE solver's function evaluations and the bytes saved for backward; after every
epoch (and every ``eval_every_n_steps`` steps) it evaluates and hands a
:class:`~neuralode.train.records.Record` to the loggers (metrics.jsonl, TensorBoard), then saves
``last.pt`` (and ``best.pt`` when the monitored metric improved). A checkpoint holds the
position inside an epoch and every random state, so a resumed run gives exactly the metrics of
an uninterrupted one (on CPU, or on GPU with ``deterministic=true``). Beside this loop:
evaluation.py, state.py (where a run stands), signals.py, config.py (the settings' checks),
checkpoint.py, memory.py, precision.py (autocast, loss scaling, memory layout), loggers.py, and
distributed.py (the same loop on every rank under torchrun; rank 0 alone writes files).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from neuralode.data.base import DataModule
from neuralode.ode import collect_stats
from neuralode.source import source_commit
from neuralode.tasks.base import Task
from neuralode.train import distributed
from neuralode.train.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from neuralode.train.config import (
    LoggerConfig,
    TrainerConfig,
    check_optimizer,
    check_trainer_settings,
)
from neuralode.train.divergence import checked_loss, solver_failure_is_divergence
from neuralode.train.evaluation import evaluate, move_to_device
from neuralode.train.loggers import ProgressLines, RunLoggers, progress_postfix, write_json
from neuralode.train.memory import SavedTensorsMeter, memory_peaks_mb, reset_cuda_peak
from neuralode.train.precision import Precision
from neuralode.train.records import Record, run_summary
from neuralode.train.seeding import PendingRngState, get_rng_state, preserved_rng_state
from neuralode.train.signals import Interrupted, StopOnSignal
from neuralode.train.state import Progress, qualified_name

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class Trainer:
    """Train ``task`` on ``data``, writing logs and checkpoints to ``run_dir``.

    ``optimizer`` is called with the task's parameters (e.g. ``functools.partial(torch.optim.SGD,
    lr=0.1)``), ``scheduler`` with the optimiser; ``scheduler_interval`` is ``"epoch"`` or
    ``"step"``. ``config`` (a plain dict) is stored in checkpoints and logged.

    When a process group is initialised (torchrun), the task trains as one replica of a
    DistributedDataParallel model; ``data``'s batch sizes are global and split over the ranks.
    """

    def __init__(
        self,
        task: Task,
        data: DataModule,
        run_dir: str | Path,
        *,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        settings: TrainerConfig | None = None,
        logging: LoggerConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        config: dict[str, Any] | None = None,
    ):
        self.settings = settings or TrainerConfig()
        self.logging = logging or LoggerConfig()
        self.device = torch.device(device)
        check_trainer_settings(self.settings, scheduler_interval, self.device)
        s = self.settings
        self.precision = Precision(s.precision, s.tf32, s.channels_last, self.device)
        self.task = self.precision.prepare(task.to(self.device))
        self.data = data
        self.run_dir = Path(run_dir)
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0  # writes every file and the progress bar
        self.seed = seed
        self.optimizer = optimizer(self.task.parameter_groups())  # parameters, or groups with settings of their own
        check_optimizer(self.optimizer)
        # Under torchrun the training step runs through DDP, which all-reduces the gradients.
        self.ddp = distributed.replica(self.task, self.device, seed, self.settings.ddp_find_unused_parameters)
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None
        self.scheduler_interval = scheduler_interval
        self.config = config or {}
        self.num_parameters = sum(p.numel() for p in self.task.parameters())
        self.generator = torch.Generator().manual_seed(seed)  # the training set's shuffle order
        self.progress = Progress()
        self.history: list[dict[str, Any]] = []  # every record of metrics.jsonl
        self.commits: list[str] = []  # the source commits that trained this run, in order (see fit)
        self.saved_tensors = SavedTensorsMeter() if self.settings.measure_saved_tensors else None
        self._pending_rng = PendingRngState()  # a checkpoint's random states, until training reaches them
        self._log: RunLoggers | None = None  # rank 0's metrics.jsonl, TensorBoard and log lines
        # This fit() call's newest evaluation, for TensorBoard's HPARAMS tab (a resume that only
        # writes summary.json, its last evaluation done before, shows none).
        self._last_record: Record | None = None
        self._figure_loader: Iterable | None = None  # figures come from the whole (unsharded) test set

    # -- the loop ---------------------------------------------------------------------------

    def fit(self, ckpt_path: str | Path | None = None) -> dict[str, Any]:
        """Train until ``max_epochs`` or ``max_steps``, continuing from ``ckpt_path`` if given.

        Returns the summary that is also written to ``summary.json``; its ``commits`` name the
        code that trained the run (a resume on other code adds its commit). On Ctrl-C or SIGTERM:
        finishes the current step and the evaluation due at it, saves ``last.pt`` and raises
        :class:`Interrupted` (a ``KeyboardInterrupt``).
        """
        if ckpt_path is not None:
            self.load_state(load_checkpoint(ckpt_path, map_location=self.device), ckpt_path)
            log.info("resuming from %s at epoch %d, step %d", ckpt_path, self.progress.epoch, self.progress.step)
        if source_commit() not in self.commits[-1:]:
            self.commits.append(source_commit())
        if self.is_main:
            resumed_at = self.progress.step if ckpt_path is not None else None
            self._log = RunLoggers(self.run_dir, self.logging, self.history, resumed_at, self.config)
        log.info("%s: %s parameters", type(self.task).__name__, f"{self.num_parameters:,}")

        with distributed.local_rank_zero_first():  # one download per machine, not one per process
            train_loader = self.data.train_dataloader(generator=self.generator)
            eval_loader = self._figure_loader = self.data.eval_dataloader()
        train_loader, eval_loader = distributed.shard_loaders(train_loader, eval_loader, self.generator,
                                                             self.settings.limit_eval_batches)
        started = time.perf_counter()
        try:
            # Under torchrun, Ctrl-C reaches every process and torchrun forwards it again: the
            # processes stop at once (no collective step to agree on); last.pt of the last
            # evaluation is where a resume starts.
            with StopOnSignal(enabled=self.world_size == 1) as stop, logging_redirect_tqdm():
                while not self._finished():
                    self._train_epoch(train_loader, eval_loader, stop)
                    if stop.requested is not None and not self._finished():  # at the last step: just finish
                        if not self.history or self.history[-1]["step"] != self.progress.step:
                            self._save("last.pt")  # else the evaluation at this step has just saved it
                        log.warning("stopped by %s at step %d; saved %s", signal.Signals(stop.requested).name,
                                    self.progress.step, self.run_dir / "last.pt")
                        raise Interrupted(stop.requested)
                if not self.history or self.history[-1]["step"] != self.progress.step:
                    self._restore_rng(loader_too=True)  # a resume at the last step evaluates first
                    self._evaluate_and_log(eval_loader, end_of_epoch=False, figures=True)
            summary = run_summary(  # elapsed_s: this fit() call's wall time (since the resume, if resumed)
                self.history, self.task.monitor, self.progress.best, name=self.config.get("name"), run_dir=str(self.run_dir),
                task=qualified_name(self.task), num_parameters=self.num_parameters, device=str(self.device),
                world_size=self.world_size, epochs=self.progress.epoch, steps=self.progress.step,
                elapsed_s=time.perf_counter() - started, commits=self.commits)
            if self.is_main:
                write_json(self.run_dir / "summary.json", summary)
                self._log.finish(self.config, self.num_parameters, self._last_record)
            return summary
        finally:
            if self._log is not None:
                self._log.close()

    def _finished(self, epochs: int | None = None) -> bool:
        """Whether training is done after ``epochs`` epochs (default: the epochs completed so far)."""
        epochs = self.progress.epoch if epochs is None else epochs
        max_steps = self.settings.max_steps
        return epochs >= self.settings.max_epochs or (max_steps is not None and self.progress.step >= max_steps)

    def _train_epoch(self, loader, eval_loader, stop: "StopOnSignal") -> None:
        p, s = self.progress, self.settings
        n_batches = len(loader) if s.limit_train_batches is None else min(len(loader), s.limit_train_batches)
        if p.batch_in_epoch == 0:
            self._restore_rng(loader_too=True)
            p.start_epoch(self.generator.get_state())
            reset_cuda_peak(self.device)
            batches = iter(loader)
        else:
            # Resuming inside an epoch: replay its shuffle, skip the batches already trained on
            # (loading them, so that augmentation and workers draw what they drew the first
            # time), then restore the random state of the moment the checkpoint was written.
            self.generator.set_state(p.epoch_loader_state)
            batches = iter(loader)
            for _ in range(p.batch_in_epoch):
                next(batches)
            self._restore_rng(loader_too=False)

        bar = tqdm(
            total=n_batches, initial=p.batch_in_epoch, desc=f"epoch {p.epoch + 1}/{s.max_epochs}",
            disable=None if s.progress_bar and self.is_main else True, leave=False, dynamic_ncols=True,
        )
        # Without a terminal tqdm is off (disable=None): progress goes to the log as lines instead.
        lines = (ProgressLines(self.logging.log_every_n_steps) if bar.disable and s.progress_bar and self.is_main
                 else None)
        if lines is not None:
            lines.begin(p.batch_in_epoch)
        tick = time.perf_counter()
        while p.batch_in_epoch < n_batches:
            scalars = self._training_step(next(batches))
            now = time.perf_counter()
            p.train_time_s += now - tick
            p.batch_in_epoch += 1
            p.step += 1
            if self.scheduler is not None and self.scheduler_interval == "step":
                self.scheduler.step()
            bar.update(1)
            bar.set_postfix(progress_postfix(scalars), refresh=False)
            if lines is not None:
                lines.update(f"epoch {p.epoch + 1}/{s.max_epochs}", p.batch_in_epoch, n_batches, p.step, scalars)
            if self._log is not None:
                self._log.step_loss(scalars["loss"], p.step)
            if self._finished():
                break
            # The evaluation due at this step runs even when a stop was asked for: a resume
            # starts after this step, so it would never run otherwise.
            if s.eval_every_n_steps and p.step % s.eval_every_n_steps == 0 and p.batch_in_epoch < n_batches:
                self._evaluate_and_log(eval_loader, end_of_epoch=False, figures=False)
            if stop.requested is not None:
                break
            tick = time.perf_counter()
        bar.close()
        if p.batch_in_epoch >= n_batches:
            due = len(self.history) % self.logging.figures_every_n_evals == 0
            self._evaluate_and_log(eval_loader, end_of_epoch=True, figures=due or self._finished(p.epoch + 1))

    def _training_step(self, batch: Any) -> dict[str, float]:
        p = self.progress
        self.task.train()
        batch = self.precision.batch(move_to_device(batch, self.device))
        last_loss = self.history[-1].get("train_loss") if self.history else None
        diverged = solver_failure_is_divergence(p.step + 1, p.epoch + 1, last_loss)
        with collect_stats() as stats, diverged:
            with self.saved_tensors if self.saved_tensors is not None else nullcontext(), self.precision.autocast():
                out = self.ddp(batch) if self.ddp is not None else self.task.training_step(batch)
            loss = checked_loss(out, type(self.task).__name__, p.step + 1, p.epoch + 1)
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.backward(loss)
        clip = self.settings.grad_clip_norm
        self.precision.step(self.optimizer, clip and (lambda: torch.nn.utils.clip_grad_norm_(self.task.parameters(), clip)))

        scalars = {key: float(value.detach()) if torch.is_tensor(value) else float(value) for key, value in out.items()}
        p.add_step(scalars, stats, self.saved_tensors.last_bytes if self.saved_tensors is not None else None)
        scalars["nfe_forward"], scalars["nfe_backward"], scalars["n_solves"] = stats.nfe_forward, stats.nfe_backward, stats.n_solves
        return scalars

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, loader: Iterable | None = None) -> dict[str, float]:
        """Test metrics (see :func:`evaluate`) over at most ``limit_eval_batches`` batches."""
        loader = self.data.eval_dataloader() if loader is None else loader
        return evaluate(self.task, loader, self.device, self.settings.limit_eval_batches, self.precision)

    def _evaluate_and_log(self, eval_loader, end_of_epoch: bool, figures: bool) -> dict[str, Any]:
        p = self.progress
        started = time.perf_counter()
        if self.world_size > 1:
            distributed.average_progress(p)
            # The sharded loader holds exactly the examples to evaluate (the limit is applied).
            metrics = evaluate(self.task, eval_loader, self.device, precision=self.precision)
        else:
            metrics = self.evaluate(eval_loader)
        train, nfe = p.epoch_means()
        saved_bytes = p.peak_saved_bytes if self.saved_tensors is not None else None
        record = Record(epoch=p.epoch + 1, step=p.step, train=train, nfe=nfe, test=metrics,
                        lr=self.optimizer.param_groups[0]["lr"],
                        time_s={"epoch": p.train_time_s, "eval": time.perf_counter() - started},
                        memory_mb=memory_peaks_mb(self.device, saved_bytes))
        line = record.as_json()
        self.history.append(line)
        self._last_record = record
        if self._log is not None:
            self._log.record(record, self._figures if figures else None)
        if end_of_epoch:
            p.epoch += 1
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                self.scheduler.step()
            p.batch_in_epoch = 0  # the next epoch starts afresh (start_epoch resets the sums)
        # best.pt first, with progress.best already updated: an interruption between the two
        # writes leaves last.pt one evaluation behind, and the resume redoes that evaluation
        # (to the same numbers), so best.pt and summary.json never point to a worse step.
        if p.improved(metrics.get(self.task.monitor), self.task.monitor_mode):
            self._save("best.pt", "last.pt")
        else:
            self._save("last.pt")
        return line

    def _figures(self) -> dict[str, Any]:
        with preserved_rng_state():  # like evaluation, figures must not change training
            batch = self.precision.batch(move_to_device(next(iter(self._figure_loader)), self.device))
            self.task.eval()
            return self.task.figures(batch)

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (see :func:`neuralode.train.checkpoint.save_checkpoint`)."""
        return {
            "task": qualified_name(self.task),
            "num_parameters": self.num_parameters,
            "model": self.task.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "grad_scaler": self.precision.state_dict(),  # fp16 only: the loss scale reached
            "progress": dataclasses.asdict(self.progress),
            "rng": get_rng_state(self.generator),
            "history": self.history,
            "config": self.config,
            "commits": self.commits,
            # Under DDP, each rank's own random state, so that a resume on as many processes is
            # exact ("rng" is rank 0's: what a single process or a different world size takes).
            "rng_per_rank": distributed.gather(get_rng_state(self.generator)) if self.world_size > 1 else None,
        }

    def load_state(self, state: dict[str, Any], source: Any = "checkpoint") -> None:
        """Take over a checkpoint's model, optimiser, scheduler, position and random states."""
        if state.get("task", qualified_name(self.task)) != qualified_name(self.task):
            raise CheckpointError(f"{source} was written for {state['task']}, but this run trains {qualified_name(self.task)}")
        load_weights(self.task, state, f"{source} holds a different model from the configured one; resume with "
                                       "the experiment and model settings the run was started with")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state.get("grad_scaler"))
        self.progress = Progress(**state["progress"])
        self.history = list(state["history"])
        # A checkpoint from before commits were recorded: its training so far ran on unknown code.
        self.commits = list(state.get("commits") or ["unknown"])
        self._pending_rng.take(state, self.rank, self.world_size)

    def _restore_rng(self, loader_too: bool) -> None:
        fresh_seed = self.seed + distributed.RANK_SEED_STRIDE * self.rank + self.progress.step
        self._pending_rng.apply(self.generator if loader_too else None, fresh_seed)

    def _save(self, *names: str) -> None:
        """Write the state to each file, in order (best.pt before last.pt: see _evaluate_and_log)."""
        state = self.state_dict()  # on every rank: it gathers the ranks' random states
        if self.is_main:
            for name in names:
                save_checkpoint(self.run_dir / name, state)
