"""From a composed config to a trained model: ``train(cfg, run_dir)``, ``evaluate_checkpoint``
and ``load_trained`` work with any config composed from ``configs/`` (the command line in
:mod:`neuralode.train.cli`, :func:`neuralode.train.config.compose` in tests and scripts). The
models and data are imported only once a config has been composed and checked
(:mod:`neuralode.train.checks`), so a bad override fails fast.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from neuralode.train.config import ConfigError, LoggerConfig, TrainerConfig, upgrade_stored_config
from neuralode.train.checks import check_train_config
from neuralode.train.run_dirs import checkpoint_file, lock_run_dir, resume_point

log = logging.getLogger(__name__)


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Build what ``cfg`` describes and train it in ``run_dir``; returns the run's summary."""
    from neuralode.train.checkpoint import clean_stale_temp_files
    from neuralode.train.seeding import seed_everything, set_deterministic
    from neuralode.train.trainer import Trainer

    device = check_train_config(cfg)
    run_dir = Path(run_dir)
    ckpt_path = resume_point(cfg, run_dir)
    if torchrun_world_size() == 1 or os.environ.get("RANK") == "0":
        run_lock = lock_run_dir(run_dir)  # noqa: F841  held until this process exits
        clean_stale_temp_files(run_dir)  # left by a save that was killed
    if torchrun_world_size() > 1:  # one of torchrun's processes (the CLI has joined the group already)
        from neuralode.train import distributed

        distributed.init_process_group()
        device = distributed.device_for_rank(device)
    set_deterministic(cfg.deterministic)
    seed_everything(cfg.seed)  # before building the model: its initial weights come from the seed
    task, data = build_task_and_data(cfg.model, cfg.data)
    trainer = Trainer(
        task,
        data,
        run_dir,
        optimizer=_instantiate(cfg.optim.optimizer, "optim.optimizer"),
        scheduler=_instantiate(cfg.optim.scheduler, "optim.scheduler") if cfg.optim.scheduler is not None else None,
        scheduler_interval=cfg.optim.scheduler_interval,
        settings=TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True)),
        logging=LoggerConfig(**OmegaConf.to_container(cfg.logger, resolve=True)),
        device=device,
        seed=cfg.seed,
        # Launch flags are not settings of the run: a resumed run stores what a straight one does.
        config={**OmegaConf.to_container(cfg, resolve=True), "resume": False, "ckpt_path": None, "allow_changes": []},
    )
    log.info("run directory: %s", run_dir)
    summary = trainer.fit(ckpt_path)
    log.info("done: %s", run_dir / "summary.json")
    return summary


def evaluate_checkpoint(
    ckpt: str | Path, device: str = "auto", limit_eval_batches: int | None = None, data_overrides: dict | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Rebuild the model and data from the config stored in a checkpoint (a file, or a run
    directory: its best.pt, else last.pt) and return its test metrics. ``data_dir`` (this
    machine's ``paths.data_dir``) replaces a stored ``data.root`` that ``data_overrides`` leave:
    a shared checkpoint's folder names its author's machine."""
    from neuralode.train.evaluation import evaluate
    from neuralode.train.records import json_key
    from neuralode.train.seeding import resolve_device

    path = checkpoint_file(Path(ckpt))
    device = resolve_device(device)
    task, data, state = load_trained(path, device, data_overrides, data_dir)
    metrics = evaluate(task, data.eval_dataloader(), device, limit_eval_batches)
    last = state["history"][-1] if state["history"] else {}
    return {"ckpt": str(path), "epoch": last.get("epoch"), "step": state["progress"]["step"],
            **{json_key("test", key): value for key, value in metrics.items()}}


def load_trained(path: str | Path, device: Any = "cpu", data_overrides: dict | None = None,
                 data_dir: str | None = None):
    """The task (in eval mode, on ``device``) and data module that a checkpoint file's stored
    config describes, with its trained weights, and the checkpoint. ``data_dir`` replaces a
    stored ``data.root`` that ``data_overrides`` leave. The file's digest is checked
    and every ``_target_`` in its config must be one of neuralode's own classes: a shared
    checkpoint may name any callable, and nothing is built from it unchecked."""
    from neuralode.train.checkpoint import load_checkpoint, load_weights
    from neuralode.train.targets import check_targets

    path = Path(path)
    state = load_checkpoint(path, map_location=device)
    config = upgrade_stored_config(state["config"])
    check_targets(config, f"checkpoint {path}")
    stored = OmegaConf.create(config)
    overrides = dict(data_overrides or {})
    if data_dir is not None and "root" in stored.data and "root" not in overrides:
        overrides["root"] = data_dir
    task, data = build_task_and_data(stored.model, OmegaConf.merge(stored.data, overrides))
    load_weights(task, state, f"{path}: the stored model does not match the stored config")
    return task.to(device).eval(), data, state


def build_task_and_data(model_cfg: Any, data_cfg: Any) -> tuple[Any, Any]:
    """Instantiate the ``model`` group (a Task) and the ``data`` group (a DataModule), after
    checking that every ``_target_`` in them is one of neuralode's classes."""
    from neuralode.data.base import DataModule
    from neuralode.tasks.base import Task
    from neuralode.train.targets import check_targets

    check_targets({"model": model_cfg, "data": data_cfg}, "config")
    task = _instantiate(model_cfg, "model")
    if not isinstance(task, Task):
        raise ConfigError(f"model._target_ must build a neuralode.tasks.Task, got {type(task).__name__}")
    data = _instantiate(data_cfg, "data")
    if not isinstance(data, DataModule):
        raise ConfigError(f"data._target_ must build a neuralode.data.DataModule, got {type(data).__name__}")
    return task, data


def _instantiate(node: Any, where: str) -> Any:
    """``hydra.utils.instantiate`` with plain containers, and errors that name the config key."""
    from hydra.errors import InstantiationException

    try:
        # "all": models get dicts and lists, never OmegaConf nodes (solver: ${solver} included).
        return hydra.utils.instantiate(node, _convert_="all")
    except InstantiationException as error:
        cause = f" ({type(error.__cause__).__name__}: {error.__cause__})" if error.__cause__ else ""
        raise ConfigError(f"cannot build {where}: {error}{cause}") from error


def torchrun_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))

