"""The checks a train or eval config passes before anything is built or written: the schema,
the settings of each group, a trial build of the model and data, group choices and the run
folder. Each raises :class:`ConfigError` with one line naming the key and what to do."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from neuralode.files import check_can_create
from neuralode.train.config import CONFIG_DIR, ConfigError, LoggerConfig, TrainConfig, TrainerConfig, config_groups

log = logging.getLogger(__name__)


def check_train_config(cfg: DictConfig) -> torch.device:
    """Every check a train config can pass or fail before the run folder is written: the
    settings, the device, and a trial build of the model and the data, whose constructors
    check their own arguments (nothing is trained, no data set is generated or read).
    Returns the device the run trains on."""
    import importlib
    import inspect

    from hydra.errors import InstantiationException

    from neuralode.train.config import check_run_settings
    from neuralode.train.seeding import resolve_device
    from neuralode.train.targets import check_targets

    check_schema(cfg, TrainConfig)
    if not str(cfg.name).strip():
        raise ConfigError("name='' is empty; runs go to outputs/<name>/..., give a name (name=my_run) or leave it out")
    _check_solver(cfg.solver)
    device = resolve_device(cfg.device)
    LoggerConfig(**OmegaConf.to_container(cfg.logger, resolve=True))  # checks itself, as TrainerConfig does
    check_run_settings(TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True)),
                       OmegaConf.to_container(cfg.optim, resolve=True), cfg.seed, device)
    check_numbers(OmegaConf.to_container(cfg.data, resolve=True), "data")
    check_targets(cfg, "config")  # only neuralode's classes and torch's optimisers are ever built

    def check_arguments(node: Any, key: str) -> None:
        """Keys of a ``_target_`` node that its class does not take, named with those it does."""
        if not isinstance(node, dict):
            return
        target = node.get("_target_")
        if isinstance(target, str):  # an allowed class (check_targets above)
            module, _, name = target.rpartition(".")
            built = getattr(importlib.import_module(module), name)
            try:
                parameters = inspect.signature(built, eval_str=True).parameters
            except (NameError, TypeError):  # an annotation that does not resolve: names only
                parameters = inspect.signature(built).parameters
            if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                valid = [p for p in parameters if p not in ("self", "params", "optimizer")]
                for arg in node:
                    if not arg.startswith("_") and arg not in valid:
                        raise ConfigError(f"{key}.{arg} is not an argument of {target}; its arguments: "
                                          f"{', '.join(valid)}")
            for arg, value in node.items():
                expected = parameters[arg].annotation if arg in parameters else None
                if not _plain_type_fits(expected, value):
                    raise ConfigError(f"{key}.{arg} must be {_TYPE_WORDS[expected]}, got {value!r}")
        for arg, value in node.items():
            check_arguments(value, f"{key}.{arg}")

    for where in ("model", "data", "optim"):
        check_arguments(OmegaConf.to_container(cfg[where], resolve=False), where)
    for where in ("model", "data"):  # a trial build: their constructors check the values
        try:
            hydra.utils.instantiate(cfg[where], _convert_="all")
        except InstantiationException as error:
            text = str(error)
            key = text.rsplit("full_key: ", 1)[1].strip() if "full_key: " in text else where
            target = f" ({text.split(chr(39))[1]})" if text.startswith("Error in call to target '") else ""
            raise ConfigError(f"cannot build {key}{target}: {error.__cause__ or text}") from None
    return device


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _plain_type_fits(expected: Any, value: Any) -> bool:
    """Whether ``value`` fits an argument annotated ``bool``, ``int``, ``float`` or ``str``
    (other annotations, and null, are the class's to check): Python itself would take
    ``augment=2`` or ``download='no'`` as true."""
    if expected not in _TYPE_WORDS or value is None or (isinstance(value, str) and "${" in value):
        return True  # an interpolation is checked once resolved, by the class
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def check_numbers(node: Any, where: str) -> None:
    """Sizes and counts that every data module shares: sizes (``*_size``) and counts (``n_*``)
    are positive integers, worker counts non-negative integers (a data module checks its own
    other settings)."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        path = f"{where}.{key}"
        if isinstance(value, dict):
            check_numbers(value, path)
        elif value is None or not (key == "num_workers" or key.endswith("_size") or key.startswith("n_")):
            continue
        elif key == "num_workers" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{path} must be 0 (load in the main process) or more, got {value!r}")
        elif key != "num_workers" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{path} must be a positive integer, got {value!r}")


def check_schema(cfg: DictConfig, schema: type) -> None:
    """Catch what composition lets through: required values not given, keys added with
    ``+key=...``, wrong types."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required setting(s): {', '.join(missing)}; add {missing[0]}=<value>")
    try:  # a plain copy: merging typed nodes would carry added keys along unchecked
        OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(cfg, resolve=True))
    except Exception as error:  # omegaconf's ValidationError / ConfigKeyError name the key
        raise ConfigError(f"invalid config: {error}") from None


def _check_solver(solver: DictConfig) -> None:
    """The ODE core's own checks of the ``solver`` group (method, tolerances, options, gradient)."""
    from neuralode.ode import InvalidOptionError
    from neuralode.ode.settings import SolverSettings

    try:
        SolverSettings.from_any(OmegaConf.to_container(solver, resolve=True))
    except InvalidOptionError as error:
        raise ConfigError(str(error)) from None


def check_group_choices(args: list[str]) -> None:
    """``group=option`` arguments (and a sweep's ``group=a,b``) name options that exist, in
    one line naming the group's options: Hydra says so in many lines, or for ``solver=3`` with
    a traceback."""
    groups = set(config_groups())
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if not sep or key not in groups or any(c in value for c in "()[]{}$"):
            continue
        options = sorted(p.stem for p in (CONFIG_DIR / key).glob("*.yaml"))
        if not options:  # a group of sub-folders (recipe/<scale>/...)
            continue
        for choice in value.split(","):
            if choice.strip() not in options:
                raise ConfigError(f"{key}={choice.strip()!r} is not an option of the {key} group; its options: "
                                  f"{', '.join(options)}")


def check_run_dir(text: str) -> Path:
    """The run folder ``hydra.run.dir`` names, if it can be made: not empty (which would train
    into the current directory), not below a file, and inside a folder that takes new entries
    (tried with a temporary folder, removed again; the run folder itself is Hydra's to make)."""
    if not text.strip():
        raise ConfigError("hydra.run.dir is empty, which would write the run into the current directory; give a "
                          "folder (hydra.run.dir=outputs/my_run) or leave it out")
    run_dir = Path(text).expanduser()
    try:
        check_can_create(run_dir)
    except NotADirectoryError as error:
        raise ConfigError(f"hydra.run.dir={text} lies below {error.filename}, which is a file; choose another "
                          "folder") from None
    except OSError as error:
        raise ConfigError(f"hydra.run.dir={text}: cannot write in {error.filename} ({error.strerror}); "
                          "choose a writable folder") from None
    return run_dir

