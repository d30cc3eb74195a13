"""Which ``_target_`` a config may name: the project's own classes, and torch's optimisers and
learning-rate schedulers.

Hydra builds whatever a ``_target_`` names, with the config's other keys as arguments, and its
own blocklist stops only a few names (``os.system``): a checkpoint or run folder shared by
someone else whose stored config says ``_target_: builtins.open`` with ``mode: w`` would
truncate a file on evaluation. So every config built from is first passed through
:func:`check_targets`, which allows

- a class defined in :mod:`neuralode.models`, :mod:`neuralode.tasks` or :mod:`neuralode.data`
  (the ``model`` and ``data`` groups). Functions are not allowed: no config builds one, and some
  write files (``neuralode.data.mnist.write_idx``);
- an optimiser in :mod:`torch.optim` and a scheduler in :mod:`torch.optim.lr_scheduler` (the
  ``optim`` group, ``_partial_: true``).

A target is imported to be checked only when its module is one of those packages, so checking
a hostile name runs no code from anywhere else. The slots ``model``, ``data``,
``optim.optimizer`` and ``optim.scheduler`` must each name their kind of class (a Task, a
DataModule, an optimiser, a scheduler).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from typing import Any

from neuralode.train.config import ConfigError

#: Packages whose classes a config may build.
PROJECT_PACKAGES = ("neuralode.models", "neuralode.tasks", "neuralode.data")
#: ``torch.optim.<Name>`` (an optimiser) and ``torch.optim.lr_scheduler.<Name>`` (a scheduler).
TORCH_MODULES = ("torch.optim", "torch.optim.lr_scheduler")

def _slot_bases() -> dict:
    """Each config slot's base class, and its words for the message (imported when checked)."""
    import torch.optim
    import torch.optim.lr_scheduler as schedulers

    from neuralode.data.base import DataModule
    from neuralode.tasks.base import Task

    return {
        "model": (Task, "a neuralode.tasks.Task"),
        "data": (DataModule, "a neuralode.data.DataModule"),
        "optim.optimizer": (torch.optim.Optimizer, "a torch.optim optimizer"),
        "optim.scheduler": ((schedulers.LRScheduler, schedulers.ReduceLROnPlateau), "a learning-rate scheduler"),
    }


#: The slots whose built object the trainer uses as one kind of thing: a data module
#: (even neuralode's own unpickler) cannot be built as ``model``, nor an optimiser as ``data``.
SLOTS = ("model", "data", "optim.optimizer", "optim.scheduler")


def _class_of(target: str) -> type:
    module_name, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def check_targets(config: Any, where: str) -> None:
    """Raise :class:`ConfigError` naming the key and the target if ``config`` (a dict, list or
    OmegaConf node, nested) holds a ``_target_`` that is not one of the allowed classes (see
    the module docstring). ``where`` says whose config it is ("checkpoint runs/x/last.pt")."""
    for key, target in _targets(config):
        if not is_allowed_target(target):
            raise ConfigError(
                f"{where}: {key}={target!r} is not one of neuralode's classes (models, tasks, data) nor a "
                "torch.optim optimizer or scheduler; refusing to build it"
            )
        slot = key.removesuffix("._target_")
        if slot in SLOTS:
            base, words = _slot_bases()[slot]
            if not issubclass(_class_of(target), base):
                raise ConfigError(f"{where}: {key}={target!r} is not {words}; refusing to build it as {slot}")


def is_allowed_target(target: Any) -> bool:
    """Whether ``target`` (a ``_target_`` value) names a class a config may build."""
    if not isinstance(target, str) or not _DOTTED_NAME.fullmatch(target):
        return False
    module_name, _, name = target.rpartition(".")
    if module_name in TORCH_MODULES:
        return _is_torch_optim_class(module_name, name)
    if any(module_name == p or module_name.startswith(p + ".") for p in PROJECT_PACKAGES):
        return _is_project_class(module_name, name)
    return False


def _is_project_class(module_name: str, name: str) -> bool:
    try:
        if importlib.util.find_spec(module_name) is None:
            return False
        module = importlib.import_module(module_name)
    except (ImportError, ValueError):  # only neuralode's own modules get here
        return False
    found = getattr(module, name, None)
    return inspect.isclass(found) and any(
        found.__module__ == p or found.__module__.startswith(p + ".") for p in PROJECT_PACKAGES
    )


def _is_torch_optim_class(module_name: str, name: str) -> bool:
    import torch.optim
    import torch.optim.lr_scheduler as schedulers

    found = getattr(importlib.import_module(module_name), name, None)
    if not inspect.isclass(found):
        return False
    bases = (schedulers.LRScheduler, schedulers.ReduceLROnPlateau)
    return issubclass(found, torch.optim.Optimizer) if module_name == "torch.optim" else issubclass(found, bases)


def _plain(config: Any) -> Any:
    """``config`` as plain dicts and lists, interpolations resolved (what Hydra will build)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(config, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(config, resolve=True)
        except Exception:  # noqa: BLE001 - an unresolvable value: check what is written
            return OmegaConf.to_container(config, resolve=False)
    return config


def _targets(node: Any, path: str = ""):
    """``(key path, value)`` of every ``_target_`` in ``node``."""
    node = _plain(node)
    if isinstance(node, dict):
        for key, value in node.items():
            key_path = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield key_path, value
            else:
                yield from _targets(value, key_path)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _targets(value, f"{path}[{index}]")
