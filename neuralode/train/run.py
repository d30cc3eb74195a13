"""From a composed config to a trained model: the ``train`` and ``eval`` subcommands.

``train(cfg, run_dir)`` and ``evaluate_checkpoint(...)`` work with any config composed from
``configs/`` (the command line, :func:`neuralode.train.config.compose` in tests and scripts);
``train_cli`` and ``eval_cli`` wrap them in Hydra's command line. The models and data are
imported only once a config has been composed, so a bad override fails fast (torch itself
comes with the ``solver`` schema, the ODE core's ``SolverSettings``).

Under ``torchrun`` every process runs ``train_cli``: they join one process group, rank 0
decides the run directory and tells the others (Hydra's ``${now:...}`` differs between
processes), and only rank 0 lets Hydra write its files (.hydra/, train.log); see
:mod:`neuralode.train.distributed`.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from neuralode.train.config import (
    CONFIG_DIR,
    ConfigError,
    EvalConfig,
    LoggerConfig,
    TrainConfig,
    TrainerConfig,
    UserError,
    check_override_keys,
    config_groups,
    compose,
    register_configs,
    upgrade_stored_config,
)

log = logging.getLogger(__name__)


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Build what ``cfg`` describes and train it in ``run_dir``; returns the run's summary."""
    from neuralode.train.checkpoint import clean_stale_temp_files
    from neuralode.train.seeding import resolve_device, seed_everything, set_deterministic
    from neuralode.train.trainer import Trainer

    check_train_config(cfg)
    run_dir = Path(run_dir)
    ckpt_path = resume_point(cfg, run_dir)
    device = resolve_device(cfg.device)
    if _torchrun_world_size() == 1 or os.environ.get("RANK") == "0":
        run_lock = lock_run_dir(run_dir)  # noqa: F841  held until this process exits
        clean_stale_temp_files(run_dir)  # left by a save that was killed
    if _torchrun_world_size() > 1:  # one of torchrun's processes (the CLI has joined the group already)
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
    from neuralode.train.seeding import resolve_device

    path = _checkpoint_file(Path(ckpt))
    device = resolve_device(device)
    task, data, state = load_trained(path, device, data_overrides, data_dir)
    metrics = evaluate(task, data.eval_dataloader(), device, limit_eval_batches)
    last = state["history"][-1] if state["history"] else {}
    return {"ckpt": str(path), "epoch": last.get("epoch"), "step": state["progress"]["step"],
            **{f"test_{key}": value for key, value in metrics.items()}}


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


def check_train_config(cfg: DictConfig) -> None:
    """Every check a train config can pass or fail before the run folder is written: the
    settings, the device, the checkpoint named by ``ckpt_path`` (readable, intact, same
    settings), and a trial build of the model and the data, whose constructors check their
    own arguments (nothing is trained, no data set is generated or read)."""
    import importlib
    import inspect

    from hydra.errors import InstantiationException

    from neuralode.train.config import check_logger_settings, check_optim_settings, check_seed, check_trainer_settings
    from neuralode.train.seeding import resolve_device
    from neuralode.train.targets import check_targets

    _check_schema(cfg, TrainConfig)
    if not str(cfg.name).strip():
        raise ConfigError("name='' is empty; runs go to outputs/<name>/..., give a name (name=my_run) or leave it out")
    _check_solver(cfg.solver)
    device = resolve_device(cfg.device)
    check_trainer_settings(TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True)), cfg.optim.scheduler_interval,
                           device)
    check_logger_settings(LoggerConfig(**OmegaConf.to_container(cfg.logger, resolve=True)))
    _check_numbers(OmegaConf.to_container(cfg.data, resolve=True), "data")
    check_targets(cfg, "config")  # only neuralode's classes and torch's optimisers are ever built
    check_optim_settings(OmegaConf.to_container(cfg.optim, resolve=True))
    check_seed(cfg.seed)

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


def _check_numbers(node: Any, where: str) -> None:
    """Sizes and counts that every data module shares: sizes (``*_size``) and counts (``n_*``)
    are positive integers, worker counts non-negative integers (a data module checks its own
    other settings)."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        path = f"{where}.{key}"
        if isinstance(value, dict):
            _check_numbers(value, path)
        elif value is None or not (key == "num_workers" or key.endswith("_size") or key.startswith("n_")):
            continue
        elif key == "num_workers" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{path} must be 0 (load in the main process) or more, got {value!r}")
        elif key != "num_workers" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{path} must be a positive integer, got {value!r}")


#: Files that make a run directory a run (Hydra's own .hydra/ and train.log do not).
#: A run folder holds a run once it holds a checkpoint to resume from; an attempt that died
#: before its first last.pt (an empty metrics.jsonl, perhaps a best.pt) may be started afresh.
RUN_FILES = ("last.pt", "summary.json")
#: Settings a resumed run may change without saying so: they do not change what is computed.
RESUMABLE_CHANGES = ("resume", "ckpt_path", "allow_changes", "device", "trainer.max_epochs", "trainer.max_steps",
                     "trainer.progress_bar", "trainer.limit_eval_batches", "logger.", "paths.", "data.data_dir",
                     "data.root", "data.num_workers")


def lock_run_dir(run_dir: Path):
    """An exclusive lock on ``run_dir`` for as long as the returned file stays open, so that two
    processes never write one run."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"{run_dir} is in use by {holder}; wait for it to finish, or train in another "
                          "folder (hydra.run.dir=...)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()}\n")
    handle.flush()
    return handle


def resume_point(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Where a run starts: None (afresh, in a folder that holds no run) or the checkpoint it
    continues (ckpt_path=, resume=true, or the last.pt of a SLURM job that was requeued), whose
    settings must match. Raises a UserError naming what is wrong."""
    ckpt_path = _checkpoint_to_resume(cfg, run_dir)
    if ckpt_path is None and requeued() and (run_dir / "last.pt").is_file():
        # SLURM started this job again (preempted, or requeued by submitit after a timeout):
        # continue the run it had begun rather than refuse its folder.
        log.info("requeued job (SLURM_RESTART_COUNT=%s): resuming from %s", os.environ["SLURM_RESTART_COUNT"],
                 run_dir / "last.pt")
        ckpt_path = run_dir / "last.pt"
    if ckpt_path is None:
        _refuse_used_run_dir(run_dir)
    else:
        _refuse_changed_settings(cfg, ckpt_path)
    return ckpt_path


def _refuse_used_run_dir(run_dir: Path) -> None:
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(found)}); continue it with resume=true, "
                          "or train into a new folder (leave hydra.run.dir out, or name another)")


def _refuse_changed_settings(cfg: DictConfig, ckpt_path: Path) -> None:
    """A resume trains on with the stored settings: refuse changed ones unless named in
    ``allow_changes`` (a half-applied change, e.g. a new batch size with the old learning rate
    kept in the optimiser state, would be recorded as if it had been the run's all along)."""
    from neuralode.train.checkpoint import load_checkpoint

    stored = upgrade_stored_config(load_checkpoint(ckpt_path).get("config") or {})
    if not stored:
        return
    from neuralode.train.loggers import flatten

    now = flatten(OmegaConf.to_container(cfg, resolve=True))
    before = flatten(stored)
    allowed = tuple(RESUMABLE_CHANGES) + tuple(cfg.get("allow_changes") or ())
    changed = sorted(key for key in set(now) & set(before)
                     if now[key] != before[key] and not any(key == a or key.startswith(a.rstrip(".") + ".")
                                                             or (a.endswith(".") and key.startswith(a)) for a in allowed))
    if changed:
        shown = "; ".join(f"{key}: {before[key]!r} -> {now[key]!r}" for key in changed[:6])
        more = f" (and {len(changed) - 6} more)" if len(changed) > 6 else ""
        raise ConfigError(f"resuming {ckpt_path} with changed settings: {shown}{more}. Resume with the run's "
                          f"settings, or accept the change: allow_changes=[{','.join(changed)}]")


def _check_schema(cfg: DictConfig, schema: type) -> None:
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


def _checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    if cfg.resume and cfg.ckpt_path:
        raise ConfigError("set either resume=true (continue this run dir) or ckpt_path=<file>, not both")
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path)
    if cfg.resume:
        last = run_dir / "last.pt"
        if not last.is_file():
            started = run_dir.is_dir() and any(run_dir.iterdir())
            hint = ("it died before its first checkpoint: start it afresh (the same command without resume=true)"
                    if started else f"name the run to continue: resume=true hydra.run.dir=outputs/{cfg.name}/<run>")
            raise ConfigError(f"resume=true but {last} does not exist; {hint}")
        return last
    return None


def _checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"{path} holds no best.pt or last.pt")
    return path


def _report_user_errors(fn):
    """Run ``fn``; a :class:`UserError` prints one line and exits with status 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@_report_user_errors
def _train_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    _quiet_full_disk_in_threads()
    try:
        train(cfg, run_dir)
    except OSError as error:  # a write that ran out of room outside the checkpoint (metrics, events, logs)
        from neuralode.train.checkpoint import DISK_FULL, full_disk_remedy, full_disk_words

        if error.errno not in (*DISK_FULL, errno.EFBIG):
            raise
        where = f" writing {error.filename}" if error.filename else ""
        if (run_dir / "last.pt").is_file():
            then = f"last.pt holds the last checkpoint; {full_disk_remedy(error)} and continue with resume=true " \
                   f"hydra.run.dir={run_dir}"
        else:
            then = f"no checkpoint was written; {full_disk_remedy(error)} and run the same command again"
        print(f"error: {full_disk_words(error)}{where}; {then}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as stop:
        status = 128 + getattr(stop, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM
        if _torchrun_world_size() > 1 and os.environ.get("RANK") != "0":
            sys.exit(status)  # rank 0 prints the command
        if not (run_dir / "last.pt").is_file():
            sys.exit(status)
        kept = [o for o in hydra_cfg.overrides.task if not o.startswith(("resume=", "ckpt_path="))]
        print(f"\ninterrupted; to continue this run:\n  {_launcher()} -m neuralode train {' '.join(kept)} "
              f"resume=true hydra.run.dir={run_dir}", file=sys.stderr)
        sys.exit(status)


def _quiet_full_disk_in_threads() -> None:
    """TensorBoard writes its events from a thread of its own: a full disk there would print a
    thread traceback before the run's own one-line error. One line for it instead."""
    import threading

    from neuralode.train.checkpoint import DISK_FULL, full_disk_words

    default = threading.excepthook

    def hook(args):
        error = args.exc_value
        if isinstance(error, OSError) and error.errno in (*DISK_FULL, errno.EFBIG):
            print(f"warning: {full_disk_words(error)} in {args.thread.name if args.thread else 'a thread'} "
                  f"(TensorBoard events): {error.filename or ''}", file=sys.stderr)
            return
        default(args)

    threading.excepthook = hook


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
@_report_user_errors
def _eval_main(cfg: DictConfig) -> None:
    _check_schema(cfg, EvalConfig)
    result = evaluate_checkpoint(cfg.ckpt, cfg.device, cfg.limit_eval_batches, OmegaConf.to_container(cfg.data),
                                 data_dir=str(cfg.paths.data_dir))
    out = Path(HydraConfig.get().runtime.output_dir) / "eval.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def train_cli() -> None:
    """``python -m neuralode train [overrides]``, also as one of ``torchrun``'s processes."""
    _run_hydra(_train_main, TrainConfig, torchrun_ok=True, precheck=_precheck_train)


#: Config groups that change what trains: choosing one on the command line renames the run.
NAMING_GROUPS = ("model", "data", "solver", "optim")


def run_name(experiment_name: str, args: list[str]) -> str | None:
    """The run's name when the command line swaps a group of the experiment (``experiment=
    mnist_odenet model=resnet`` trains a ResNet: ``mnist_odenet-model_resnet``, not
    ``mnist_odenet``); None when the experiment's own name says what trains, or name= is given."""
    if any(arg.startswith("name=") for arg in args):
        return None
    swapped = [arg.split("=", 1) for arg in args if arg.split("=", 1)[0] in NAMING_GROUPS and "=" in arg]
    if not swapped:
        return None
    return experiment_name + "".join(f"-{group}_{choice}" for group, choice in swapped)


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


def _precheck_train(args: list[str]) -> list[str]:
    """Compose and check the config before Hydra creates the run folder, so that a bad setting
    leaves nothing behind; returns overrides to add (the run's name). Sweeps (-m) are checked
    per job, inside their own runs, after their group choices are checked here."""
    check_group_choices(args)
    if any(arg in ("-m", "--multirun") or arg.startswith("-") for arg in args):
        return []
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose("train", args, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(override_error_line(error)) from None
    name = run_name(str(cfg.name), args)
    extra = [f"name={name}"] if name else []
    if extra:
        cfg = compose("train", args + extra, return_hydra_config=True)
    container = OmegaConf.to_container(cfg, resolve=False)
    run_dir = check_run_dir(str(cfg.hydra.run.dir))
    container.pop("hydra")  # the schema does not know it
    plain = OmegaConf.create(container)
    check_train_config(plain)
    resume_point(plain, run_dir)  # before Hydra writes its .hydra/ and train.log into the folder
    return extra


def check_run_dir(text: str) -> Path:
    """The run folder ``hydra.run.dir`` names, if it can be made: not empty (which would train
    into the current directory), not below a file, and inside a folder that takes new entries
    (tried with a temporary folder, removed again; the run folder itself is Hydra's to make)."""
    if not text.strip():
        raise ConfigError("hydra.run.dir is empty, which would write the run into the current directory; give a "
                          "folder (hydra.run.dir=outputs/my_run) or leave it out")
    run_dir = Path(text).expanduser()
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"hydra.run.dir={text} lies below {existing}, which is a file; choose another folder")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".neuralode-check-").cleanup()
    except OSError as error:
        raise ConfigError(f"hydra.run.dir={text}: cannot write in {existing} ({error.strerror}); "
                          "choose a writable folder") from None
    return run_dir


def override_error_line(error: Exception) -> str:
    """Hydra's and OmegaConf's refusal of an override (several lines, with types and search
    paths) as one line in their own words: the override, what is wrong, what to do."""
    text = str(error)
    if text.startswith("Error merging override ") and error.__cause__ is not None:  # a value of the wrong type
        return f"{text.removeprefix('Error merging override ')}: {str(error.__cause__).splitlines()[0]}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[1].startswith("Available options in"):  # an unknown group option
        options = []
        for line in lines[2:]:
            if line.startswith("Config search path"):
                break
            options.append(line)
        what = lines[0].removeprefix("In 'train': ")
        return f"{what}; {lines[1][0].lower()}{lines[1][1:]} {', '.join(options)}"
    if type(error).__name__ == "OverrideParseException":
        return f"cannot parse the overrides: {' '.join(lines)}"
    return " ".join(lines)


def eval_cli() -> None:
    """``python -m neuralode eval ckpt=<file or run dir> [overrides]``."""
    _run_hydra(_eval_main, EvalConfig, precheck=_precheck_eval)


def _precheck_eval(args: list[str]) -> list[str]:
    """The eval settings, checked before Hydra makes the eval's run folder (as train's are):
    the overrides compose, limit_eval_batches is positive, data sizes are positive integers,
    the checkpoint (or run folder) exists, and the output folder can be made."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose("eval", args, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(override_error_line(error)) from None
    check_run_dir(str(cfg.hydra.run.dir))
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra")
    plain = OmegaConf.create(container)
    _check_schema(plain, EvalConfig)
    limit = plain.limit_eval_batches
    if limit is not None and limit < 1:
        raise ConfigError(f"limit_eval_batches must be a positive integer (or null: the whole test set), got {limit}")
    _check_numbers(OmegaConf.to_container(plain.data, resolve=True), "data")
    path = _checkpoint_file(Path(str(plain.ckpt)))
    if not path.is_file():
        raise ConfigError(f"ckpt={plain.ckpt}: {path} does not exist; give a checkpoint file or a run folder")
    return []


def _run_hydra(main, schema: type, torchrun_ok: bool = False, precheck=None) -> None:
    register_configs()
    try:
        check_override_keys(sys.argv[1:], schema)
        if precheck is not None and _torchrun_world_size() == 1:
            sys.argv += precheck(sys.argv[1:])
        if _torchrun_world_size() > 1:
            if not torchrun_ok:
                raise ConfigError("this subcommand runs in one process: start it without torchrun")
            sys.argv += _join_torchrun_processes(sys.argv[1:])
    except UserError as error:  # a bad setting, or a checkpoint to resume that cannot be read
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    finally:
        if "torch.distributed" in sys.modules:  # leave the process group cleanly (torch warns otherwise)
            from neuralode.train import distributed

            distributed.destroy_process_group()


def requeued() -> bool:
    """Whether SLURM has restarted this job (it counts restarts in SLURM_RESTART_COUNT)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def _torchrun_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _launcher() -> str:
    """How this process was started, for the command that continues an interrupted run."""
    world = _torchrun_world_size()
    if world == 1:
        return "python"
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if per_node == world:
        return f"torchrun --standalone --nproc_per_node={per_node}"
    return f"torchrun --nnodes={world // per_node} --nproc_per_node={per_node} <your rendezvous options>"


def _join_torchrun_processes(args: list[str]) -> list[str]:
    """Join torchrun's process group; return the overrides that give every process rank 0's
    run directory and leave Hydra's files (.hydra/, train.log) to rank 0."""
    from neuralode.train import distributed

    if any(arg in ("-m", "--multirun") for arg in args):
        raise ConfigError(
            "torchrun trains one run; for a sweep, launch one torchrun per run (or sweep without torchrun: "
            "hydra/launcher=joblib or submitit_slurm), see docs/distributed.md"
        )
    distributed.init_process_group()
    extra = []
    if not any(arg.startswith("hydra.run.dir=") for arg in args):  # given, it is the same on every rank
        run_dir = None
        if distributed.rank() == 0:
            overrides = [arg for arg in args if not arg.startswith("-")]
            run_dir = str(compose("train", overrides, return_hydra_config=True).hydra.run.dir)
        run_dir = distributed.broadcast(run_dir)
        if "'" in run_dir:
            raise ConfigError(f"the run directory {run_dir!r} contains a quote; pass hydra.run.dir=<a plainer path>")
        extra.append(f"hydra.run.dir='{run_dir}'")
    if distributed.rank() > 0:  # no .hydra/ or train.log of its own; warnings still reach the console
        extra += ["hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra.job_logging.root.level=WARNING"]
    return extra
