"""The ``train`` and ``eval`` subcommands on Hydra's command line: the pre-checks that run before
Hydra makes a run folder, one-line errors, interrupted runs, and joining torchrun's processes.

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
import threading
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from neuralode.train.config import (
    CONFIG_DIR,
    ConfigError,
    EvalConfig,
    TrainConfig,
    UserError,
    check_override_keys,
    compose,
    register_configs,
)
from neuralode.train.checks import check_group_choices, check_numbers, check_run_dir, check_schema, check_train_config
from neuralode.train.run import evaluate_checkpoint, torchrun_world_size, train
from neuralode.train.run_dirs import checkpoint_file, resume_point

log = logging.getLogger(__name__)


#: The run's own full-disk error line and the event thread's warning are written under one lock,
#: each as one write, and the warning not at all once the error is out: the error line is the last.
_STDERR_LOCK = threading.Lock()
_RUN_ERROR_SAID = threading.Event()


def _report_user_errors(fn):
    """Run ``fn``; a :class:`UserError` prints one line and exits with status 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except UserError as error:
            _say_error(str(error))
            sys.exit(2)

    return wrapper


def _say_error(text: str) -> None:
    """The run's one error line, on stderr, after any warning of TensorBoard's thread, never before."""
    with _STDERR_LOCK:
        _RUN_ERROR_SAID.set()
        sys.stderr.write(f"error: {text}\n")


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
        _say_error(f"{full_disk_words(error)}{where}; {then}")
        sys.exit(2)
    except KeyboardInterrupt as stop:
        status = 128 + getattr(stop, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM
        if torchrun_world_size() > 1 and os.environ.get("RANK") != "0":
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
    from neuralode.train.checkpoint import DISK_FULL, full_disk_words

    default = threading.excepthook

    def hook(args):
        error = args.exc_value
        if isinstance(error, OSError) and error.errno in (*DISK_FULL, errno.EFBIG):
            with _STDERR_LOCK:
                if not _RUN_ERROR_SAID.is_set():
                    thread = args.thread.name if args.thread else "a thread"
                    sys.stderr.write(f"warning: {full_disk_words(error)} in {thread} (TensorBoard events)"
                                     f"{': ' + error.filename if error.filename else ''}\n")
            return
        default(args)

    threading.excepthook = hook


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
@_report_user_errors
def _eval_main(cfg: DictConfig) -> None:
    check_schema(cfg, EvalConfig)
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


def _precheck_train(args: list[str]) -> list[str]:
    """Compose and check the config before Hydra creates the run folder, so that a bad setting
    leaves nothing behind; returns overrides to add (the run's name). Sweeps (-m) are checked
    per job, inside their own runs, after their group choices are checked here."""
    check_group_choices(args)
    if any(arg in ("-m", "--multirun") or arg.startswith("-") for arg in args):
        return []
    cfg = _compose_checked("train", args)
    name = run_name(str(cfg.name), args)
    extra = [f"name={name}"] if name else []
    if extra:
        cfg = _compose_checked("train", args + extra)
    plain, run_dir = _split_run_dir(cfg)
    check_train_config(plain)
    resume_point(plain, run_dir)  # before Hydra writes its .hydra/ and train.log into the folder
    return extra


def _compose_checked(config_name: str, args: list[str]) -> DictConfig:
    """The config the command line composes (with Hydra's node), or Hydra's and OmegaConf's
    refusal of an override as one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose(config_name, args, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(override_error_line(error)) from None


def _split_run_dir(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """The config without Hydra's node (the schema does not know it), and the run folder it names,
    checked (:func:`check_run_dir`)."""
    run_dir = check_run_dir(str(cfg.hydra.run.dir))
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra")
    return OmegaConf.create(container), run_dir


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
    plain, _ = _split_run_dir(_compose_checked("eval", args))
    check_schema(plain, EvalConfig)
    limit = plain.limit_eval_batches
    if limit is not None and limit < 1:
        raise ConfigError(f"limit_eval_batches must be a positive integer (or null: the whole test set), got {limit}")
    check_numbers(OmegaConf.to_container(plain.data, resolve=True), "data")
    path = checkpoint_file(Path(str(plain.ckpt)))
    if not path.is_file():
        raise ConfigError(f"ckpt={plain.ckpt}: {path} does not exist; give a checkpoint file or a run folder")
    return []


def _run_hydra(main, schema: type, torchrun_ok: bool = False, precheck=None) -> None:
    register_configs()
    try:
        check_override_keys(sys.argv[1:], schema)
        if precheck is not None and torchrun_world_size() == 1:
            sys.argv += precheck(sys.argv[1:])
        if torchrun_world_size() > 1:
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


def _launcher() -> str:
    """How this process was started, for the command that continues an interrupted run."""
    world = torchrun_world_size()
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

