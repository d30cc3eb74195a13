"""The schema of a run's configuration, and the checks that give clear errors at start-up.

The YAML files under ``configs/`` say what a run is; the dataclasses below say which keys
exist and what type each has. They are registered in Hydra's ConfigStore as the base of
``train.yaml`` and ``eval.yaml``, so a typo (``trainer.max_epoch=1``) or a wrong type
(``solver.rtol=abc``) fails while the config is composed, before anything is built.
``model`` and ``data`` stay open (``Any``): their keys are the arguments of whatever their
``_target_`` builds, and that call checks them. The ``solver`` group's schema is the ODE core's
own :class:`neuralode.ode.settings.SolverSettings`, the type every model solves with.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import torch
from omegaconf import MISSING, OmegaConf

from neuralode.errors import UserError  # noqa: F401  (re-exported: the trainer's errors derive from it)
from neuralode.ode.settings import SolverSettings
from neuralode.source import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"


# configs/hydra/launcher/{joblib,submitit_slurm}.yaml deliberately share the launcher plugins'
# option names (with our defaults); Hydra then checks them against the plugins' schemas, which
# is what we want, but warns about it on every composition, in every sweep worker too (which
# imports this module to run a job): hence at import time.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")




class ConfigError(UserError):
    """A configuration value that is invalid or inconsistent."""


@dataclass
class OptimConfig:
    """``optimizer`` and ``scheduler`` are ``_partial_`` targets: called later with the
    parameters and the optimiser. ``scheduler_interval`` says when the scheduler steps."""

    optimizer: Any = MISSING
    scheduler: Any = None
    scheduler_interval: str = "epoch"  # "epoch" or "step"


#: trainer.precision: each setting's autocast dtype (None: no autocast). See neuralode/train/precision.py.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainerConfig:
    """The training loop's limits and cadence (see neuralode.train.trainer.Trainer)."""

    max_epochs: int = 160
    max_steps: Optional[int] = None  # stop after this many optimiser steps (across epochs)
    limit_train_batches: Optional[int] = None  # batches per epoch (None: the whole set)
    limit_eval_batches: Optional[int] = None  # batches per evaluation (None: the whole set)
    eval_every_n_steps: Optional[int] = None  # extra evaluations inside an epoch
    progress_bar: bool = True  # tqdm per epoch; off anyway when stderr is not a terminal
    grad_clip_norm: Optional[float] = None
    measure_saved_tensors: bool = True  # peak bytes saved for backward (autograd hooks)
    # Under torchrun: let DDP tolerate parameters that a training step leaves without gradient
    # (slower: it walks the autograd graph every step). Only tasks with such parameters need it.
    ddp_find_unused_parameters: bool = False
    # The device's arithmetic (neuralode/train/precision.py); all off by default.
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16: CUDA only, with loss scaling)
    tf32: Optional[bool] = None  # CUDA matrix products and convolutions in TF32 (null: PyTorch's defaults)
    channels_last: bool = False  # NHWC weights and image batches

    def __post_init__(self) -> None:
        """Checked once, where the settings are made (the trainer takes them as they are)."""
        positive = {
            "max_epochs": self.max_epochs, "max_steps": self.max_steps, "limit_train_batches": self.limit_train_batches,
            "limit_eval_batches": self.limit_eval_batches, "eval_every_n_steps": self.eval_every_n_steps,
        }
        for name, value in positive.items():
            if value is not None and value < 1:
                raise ConfigError(f"trainer.{name} must be a positive integer (or null), got {value}")
        clip = self.grad_clip_norm
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise ConfigError(f"trainer.grad_clip_norm must be a positive number (or null: no clipping), got {clip}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be {', '.join(list(PRECISIONS)[:-1])} or "
                              f"{list(PRECISIONS)[-1]}, got {self.precision!r}")


@dataclass
class LoggerConfig:
    """What is written to the run directory besides metrics.jsonl and the checkpoints."""

    tensorboard: bool = True
    log_figures: bool = True  # the task's figures(), as TensorBoard images
    # Figures at the first evaluation, every n-th and the last: drawing one costs more than a
    # small model's epoch (a spiral RNN's: 0.27 s against 0.18 s of training).
    figures_every_n_evals: int = 10
    log_every_n_steps: int = 50  # train/loss_step in TensorBoard

    def __post_init__(self) -> None:
        for key in ("log_every_n_steps", "figures_every_n_evals"):
            if getattr(self, key) < 1:
                raise ConfigError(f"logger.{key} must be a positive integer, got {getattr(self, key)}")


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainConfig:
    """``python -m neuralode train``: one experiment."""

    name: str = "run"  # the experiment's name: outputs/<name>/<time>/
    scale: str = "paper"  # smoke | cpu | paper: which recipe of the experiment (configs/recipe/<scale>/)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False
    resume: bool = False  # continue from <run dir>/last.pt (pass hydra.run.dir=<that run>)
    ckpt_path: Optional[str] = None  # continue from this checkpoint file
    # Settings a resume may change (e.g. [optim.optimizer.lr]); others must match the stored run.
    allow_changes: List[str] = field(default_factory=list)
    model: Any = MISSING
    data: Any = MISSING
    solver: SolverSettings = field(default_factory=SolverSettings)  # models get it as ``solver: ${solver}``
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class EvalConfig:
    """``python -m neuralode eval ckpt=<file or run dir>``: test metrics of a checkpoint."""

    name: str = "eval"
    ckpt: str = MISSING
    device: str = "auto"
    limit_eval_batches: Optional[int] = None
    data: Dict[str, Any] = field(default_factory=dict)  # merged over the stored data config
    paths: PathsConfig = field(default_factory=PathsConfig)


def check_run_settings(trainer: TrainerConfig, optim: Any, seed: Any, device: Any) -> None:
    """What the settings cannot check alone (TrainerConfig and LoggerConfig check themselves
    when made): the optimiser and scheduler (:func:`check_optim_settings`), the seed, and
    :func:`check_trainer_settings`."""
    check_trainer_settings(trainer, optim.get("scheduler_interval", "epoch"), device)
    check_optim_settings(optim)
    check_seed(seed)


def check_trainer_settings(s: TrainerConfig, scheduler_interval: str, device: Any = None) -> None:
    """What the trainer's own settings depend on besides themselves: the scheduler's interval,
    and, when the device is given, what it supports."""
    if scheduler_interval not in ("epoch", "step"):
        raise ConfigError(f"optim.scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    if s.precision == "fp16" and device is not None and getattr(device, "type", str(device)) != "cuda":
        raise ConfigError(f"trainer.precision=fp16 needs a CUDA device (this run uses {device}); "
                          "use trainer.precision=bf16 on CPU")


def check_seed(seed: Any) -> None:
    """torch takes seeds below 2^64 (numpy gets the seed mod 2^32): a larger one failed mid-start-up."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
        raise ConfigError(f"seed must be an integer in [0, 2^64), got {seed!r}")


def check_lr(lr: Any) -> None:
    """A learning rate of zero trains nothing and a negative one ascends the loss: refuse both,
    and anything that is not a finite number."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"optim.optimizer.lr must be a positive number, got {lr!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _milestones(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in v)
            and list(v) == sorted(set(v)))


#: optim.optimizer / optim.scheduler arguments torch takes without complaint (or with a
#: traceback mid-run) that make no sense: each key's rule, and the words that say it.
_OPTIM_RULES = {
    "momentum": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "dampening": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "eps": (lambda v: _number(v) and v > 0, "a positive number"),
    "betas": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
              "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    "gamma": (lambda v: _number(v) and v > 0, "a positive number (the factor on the learning rate)"),
    "milestones": (lambda v: _milestones(v) or (isinstance(v, (list, tuple)) and bool(v) and all(map(_milestones, v))),
                   "a list of increasing epoch (or step) numbers, e.g. [60, 100] (or one such list per "
                   "parameter group)"),
    "T_max": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
    "eta_min": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "step_size": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
}


def check_optim_settings(optim: Any) -> None:
    """``optim.optimizer`` and ``optim.scheduler`` (plain dicts, resolved): the learning rate
    and the arguments of :data:`_OPTIM_RULES`, each named with what it must be."""
    for part in ("optimizer", "scheduler"):
        node = optim.get(part) if isinstance(optim, dict) else None
        if not isinstance(node, dict):
            continue
        if part == "optimizer" and "lr" in node:
            check_lr(node["lr"])
        for key, value in node.items():
            rule = _OPTIM_RULES.get(key)
            if rule is not None and value is not None and not rule[0](value):
                raise ConfigError(f"optim.{part}.{key} must be {rule[1]}, got {value!r}")


def check_optimizer(optimizer: Any) -> None:
    """The built optimiser's learning rates (a tensor learning rate is left to its owner)."""
    for group in optimizer.param_groups:
        if isinstance(group.get("lr"), (int, float)):
            check_lr(group["lr"])


SCHEMAS = {"train_schema": TrainConfig, "eval_schema": EvalConfig}

#: Keys that no longer exist, with what replaced them (named when someone still uses them).
RENAMED_KEYS = {"solver.adjoint": "'solver.adjoint=true/false' is now 'solver.gradient=adjoint/direct'"}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def scale_lr(base_lr: float, batch_size: int, base_batch_size: int) -> float:
    """The linear scaling rule: ``base_lr`` at ``base_batch_size``, proportional to the batch."""
    return float(base_lr) * int(batch_size) / int(base_batch_size)


def _neuralode_root() -> str:
    return os.environ.get("NEURALODE_ROOT") or str(REPO_ROOT)


def register_configs() -> None:
    """Register the schemas and resolvers the YAML files use. Safe to call more than once."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=name, node=schema)
    OmegaConf.register_new_resolver("scale_lr", scale_lr, replace=True)
    OmegaConf.register_new_resolver("neuralode_root", _neuralode_root, replace=True)


def compose(config_name: str = "train", overrides: list[str] | tuple[str, ...] = (), return_hydra_config: bool = False) -> Any:
    """Compose a config as the command line would (for tests, scripts and notebooks);
    ``return_hydra_config=True`` keeps the ``hydra`` node (run and sweep directories, ...)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def config_groups() -> list[str]:
    """The config groups: the sub-folders of configs/."""
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir())


def check_override_keys(args: list[str], schema: type = TrainConfig) -> None:
    """Reject ``key=value`` arguments whose key the schema does not have, naming the valid keys.

    Hydra would reject them too, but without saying what the valid keys are. Keys under an
    open node (``model.*``, ``data.*``, dictionaries) and Hydra's own (``hydra.*``, ``+key``,
    ``~key``, ``group/option``) are left to Hydra.
    """
    groups = set(config_groups())
    for arg in args:
        key = arg.split("=", 1)[0]
        if "=" not in arg or arg.startswith(("-", "+", "~", "hydra")) or any(c in key for c in "/@"):
            continue
        node, path = schema, []
        for part in key.split("."):
            names = [f.name for f in dataclasses.fields(node)]
            if not path and part in groups:
                names.append(part)
            if part not in names:
                where = ".".join(path)
                close = difflib.get_close_matches(part, names, n=1)
                hint = f" (did you mean '{'.'.join([*path, close[0]])}'?)" if close else ""
                renamed = RENAMED_KEYS.get(".".join([*path, part]))
                hint = f" ({renamed})" if renamed else hint
                raise ConfigError(
                    f"unknown config key '{key}'{hint}\n"
                    f"valid keys {'under ' + repr(where) if where else 'at the top level'}: {', '.join(names)}"
                )
            path.append(part)
            field_type = {f.name: f.type for f in dataclasses.fields(node)}.get(part)
            node = _dataclass_named(field_type)
            if node is None:
                break


def _dataclass_named(type_name: Any) -> type | None:
    """The schema dataclass a field annotation names (annotations are strings here), if any."""
    found = globals().get(type_name) if isinstance(type_name, str) else type_name
    return found if dataclasses.is_dataclass(found) else None


def upgrade_stored_config(config: Any) -> Any:
    """A config that an older version stored (a run's ``.hydra/config.yaml``, a checkpoint's
    ``config``) in today's keys, so that old runs can still be read and rebuilt: every
    ``solver`` node's ``adjoint: true/false`` becomes ``gradient: adjoint/direct`` (with
    ``false``, the ``adjoint_*`` settings, which were ignored then, are dropped). Takes and
    returns a plain dict or a DictConfig (its interpolations kept); the input is not changed."""
    from omegaconf import DictConfig

    if isinstance(config, DictConfig):
        return OmegaConf.create(_upgrade_node(OmegaConf.to_container(config, resolve=False)))
    return _upgrade_node(config)


def _upgrade_node(node: Any, key: Any = None) -> Any:
    if isinstance(node, list):
        return [_upgrade_node(value) for value in node]
    if not isinstance(node, dict):
        return node
    node = {k: _upgrade_node(v, k) for k, v in node.items()}
    if key == "solver" and isinstance(node.get("adjoint"), bool) and "gradient" not in node:
        adjoint = node["adjoint"]
        gradient = "adjoint" if adjoint else "direct"
        node = {("gradient" if k == "adjoint" else k): (gradient if k == "adjoint" else v) for k, v in node.items()}
        if not adjoint:
            node.update({k: None for k in ("adjoint_method", "adjoint_rtol", "adjoint_atol") if k in node})
            node.update({"adjoint_options": {}} if "adjoint_options" in node else {})
    return node
