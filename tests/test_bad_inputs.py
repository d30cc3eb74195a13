"""Bad inputs, one table: every user error is refused before a run folder exists, with exit
status 2 and one or two lines naming the key, the value and what is allowed (no traceback).

The command line runs in-process (``neuralode.train.cli.train_cli`` with ``sys.argv`` set):
the checks all happen before Hydra starts a run, so no subprocess is needed. Each case gets
``hydra.run.dir=<tmp>/run`` and ``paths.output_dir=<tmp>/outputs`` and must leave neither
behind; a case that names an existing folder (resume, a used run folder) must leave it
byte for byte as it was.

Every refusal exits with status 2 and ``error: <one or two lines>``: our own checks (UserError /
ConfigError / CheckpointError), and Hydra's and OmegaConf's refusals of an override they cannot
parse or merge (a key that is not in an open node, ``group=<missing option>``, a value of the
wrong type for the schema), which the pre-check composes first and reports in one line.

The ODE core's argument checks are direct calls (``odeint``, ``SolverSettings``): each must
raise its named exception with a one-line message.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from neuralode.ode import (
    AdjointParamsError,
    InvalidOptionError,
    NonFiniteStateError,
    InvalidTimeError,
    SolverSettings,
    StateMismatchError,
    odeint,
    odeint_adjoint,
)
from neuralode.ode.sde import sdeint
from neuralode.train.config import compose
from neuralode.train.cli import train_cli
from neuralode.train.run import train

#: Every base ends the same way: CPU, quiet, and one step should a case be accepted by mistake.
QUIET = ("device=cpu", "trainer.progress_bar=false", "logger.tensorboard=false", "logger.log_figures=false",
         "trainer.max_steps=1", "trainer.limit_eval_batches=1")
#: The latent ODE on 12 tiny spirals (generated, no files): the base of most cases.
SPIRAL = ("experiment=latent_ode_spiral", "data.n_spirals=12", "data.n_eval=4", "data.n_points=20",
          "data.n_extrap=10", "data.dt=0.1", "data.n_obs=6", "data.batch_size=4", "data.eval_batch_size=4", *QUIET)
CNF = ("experiment=cnf_toy2d", "data.n_train=64", "data.n_eval=32", "data.batch_size=32", *QUIET)
NF = ("experiment=nf_toy2d", "data.n_train=64", "data.n_eval=32", "data.batch_size=32", *QUIET)
DENSITY = ("experiment=cnf_density_matching", "data.steps_per_epoch=1", "data.eval_samples=64", *QUIET)
MNIST = ("experiment=mnist_odenet", "data.synthetic=true", "data.synthetic_train_size=16",
         "data.synthetic_eval_size=16", "data.batch_size=8", "data.download=false", "model.net.channels=4", *QUIET)
POISSON = ("experiment=latent_ode_poisson", "data.n_sequences=8", "data.n_eval=4", "data.n_grid=10", *QUIET)
RNN = ("experiment=rnn_spiral", *SPIRAL[1:])



@dataclass
class Case:
    args: tuple[str, ...]  # "{tmp}" is the case's temporary folder, "{ckpt}" the trained run's last.pt
    message: str  # a regular expression the error must match
    base: tuple[str, ...] = SPIRAL
    setup: Callable[[Path, Path], Path | None] | None = None  # (tmp, trained run) -> an existing run folder
    run_dir: str | None = None  # hydra.run.dir ("{tmp}" as above); None: <tmp>/run or the setup's folder


# ---- setups: files and folders a case refers to ---------------------------------------------

def write_garbage(tmp: Path, trained: Path) -> None:
    (tmp / "garbage.pt").write_bytes(bytes(range(256)) * 8)


def write_empty(tmp: Path, trained: Path) -> None:
    (tmp / "empty.pt").write_bytes(b"")


def flip_bytes(tmp: Path, trained: Path) -> None:
    data = bytearray((trained / "last.pt").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    (tmp / "flipped.pt").write_bytes(bytes(data))


def truncate(tmp: Path, trained: Path) -> None:
    data = (trained / "last.pt").read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])


def foreign_torch_file(tmp: Path, trained: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2)}}, tmp / "foreign.pt")


def pickled_object(tmp: Path, trained: Path) -> None:
    torch.save({"model": nn.Linear(2, 2)}, tmp / "pickled.pt")  # a module is pickled as a class


def used_run_folder(tmp: Path, trained: Path) -> Path:
    shutil.copytree(trained, tmp / "used")
    return tmp / "used"


def a_file(tmp: Path, trained: Path) -> None:
    (tmp / "afile").write_text("not a folder\n")


def empty_folder(tmp: Path, trained: Path) -> Path:
    (tmp / "empty_run").mkdir()
    return tmp / "empty_run"



CASES = [
    # ---- unknown keys (did you mean ...) and Hydra's own refusals --------------------------
    pytest.param(Case(("trainer.max_epoch=1",), r"unknown config key 'trainer.max_epoch' \(did you mean 'trainer.max_epochs'\?\)"), id="typo-trainer-key"),
    pytest.param(Case(("devce=cpu",), r"unknown config key 'devce' \(did you mean 'device'\?\)"), id="typo-top-level-key"),
    pytest.param(Case(("optim.optimzer.lr=0.1",), r"did you mean 'optim.optimizer'"), id="typo-optim-key"),
    pytest.param(Case(("solver.adjoint=false",), r"'solver.adjoint=true/false' is now 'solver.gradient=adjoint/direct'"), id="renamed-solver-adjoint"),
    pytest.param(Case(("data.foo=1",), r"Could not override 'data.foo'. To append to your config use \+data.foo=1"), id="data-key-not-in-node"),
    pytest.param(Case(("+data.foo=1",), r"data.foo is not an argument of neuralode.data.spirals.SpiralDataModule; its arguments: n_obs"), id="data-key-added"),
    pytest.param(Case(("+model.net.foo=1",), r"model.net.foo is not an argument of neuralode.models.latent_ode.LatentODE; its arguments: obs_dim"), id="model-key-added"),
    pytest.param(Case(("+optim.optimizer.momentum=0.9",), r"optim.optimizer.momentum is not an argument of torch.optim.Adam; its arguments: lr"), id="optimizer-key-added"),
    pytest.param(Case(("solver.options.checkpoint_every=0",), r"To append to your config use \+solver.options.checkpoint_every=0"), id="solver-option-without-plus"),
    pytest.param(Case(("experiment=nope",), r"experiment='nope' is not an option of the experiment group; its options: cnf_density_matching, .*mnist_odenet"), id="unknown-experiment"),
    pytest.param(Case(("solver=3",), r"solver='3' is not an option of the solver group; its options: adams, dopri5"), id="group-option-a-number"),
    pytest.param(Case(("-m", "experiment=latent_ode_spiral,nope"), r"experiment='nope' is not an option of the experiment group"), id="sweep-unknown-experiment"),
    pytest.param(Case((), r"hydra.run.dir is empty, which would write the run into the current directory", run_dir=""), id="run-dir-empty"),
    pytest.param(Case((), r"hydra.run.dir=.*afile/run lies below .*afile, which is a file", setup=a_file, run_dir="{tmp}/afile/run"), id="run-dir-below-a-file"),
    pytest.param(Case((), r"hydra.run.dir=/proc/nope/run: cannot write in /proc", run_dir="/proc/nope/run"), id="run-dir-not-writable"),
    pytest.param(Case(("seed=1180591620717411303424",), r"seed must be an integer in \[0, 2\^64\), got 1180591620717411303424"), id="seed-too-large"),
    pytest.param(Case(("optim=sgd", "optim.scheduler.gamma=-1"), r"optim.scheduler.gamma must be a positive number"), id="scheduler-gamma-negative"),
    pytest.param(Case(("optim=sgd", "optim.scheduler.milestones=abc"), r"optim.scheduler.milestones must be a list of increasing"), id="scheduler-milestones-text"),
    pytest.param(Case(("optim=sgd", "optim.optimizer.momentum=-1"), r"optim.optimizer.momentum must be a number >= 0, got -1"), id="momentum-negative"),
    pytest.param(Case(("optim=sgd", "optim.optimizer.weight_decay=-1"), r"optim.optimizer.weight_decay must be a number >= 0"), id="weight-decay-negative"),
    pytest.param(Case(("data.train_on_whole_curve=2",), r"data.train_on_whole_curve must be true or false, got 2"), id="data-bool-given-int"),
    pytest.param(Case(("solver.method=scipy_solver", "solver.gradient=direct"), r"solver.method=scipy_solver passes no gradient through its steps, so solver.gradient=direct cannot train"), id="scipy-solver-direct"),
    pytest.param(Case(("seed=abc",), r"seed=abc: Value 'abc' of type 'str' could not be converted to Integer"), id="seed-not-int"),
    pytest.param(Case(("solver.rtol=abc",), r"solver.rtol=abc: Value 'abc' of type 'str' could not be converted to Float"), id="rtol-not-float"),
    pytest.param(Case(("trainer.progress_bar=maybe",), r"trainer.progress_bar=maybe: Value 'maybe' is not a valid bool"), id="progress-bar-not-bool"),
    pytest.param(Case(("data.batch_size=[1",), r"cannot parse the overrides: no viable alternative at input '\[1'"), id="override-syntax"),
    pytest.param(Case(("allow_changes=foo",), r"allow_changes=foo: Invalid value assigned: str is not a ListConfig"), id="allow-changes-not-list"),
    # ---- wrong types inside the open model/data/optim nodes ---------------------------------
    pytest.param(Case(("data.batch_size=abc",), r"data.batch_size must be a positive integer, got 'abc'"), id="batch-size-not-int"),
    pytest.param(Case(("data.batch_size=2.5",), r"data.batch_size must be a positive integer, got 2.5"), id="batch-size-float"),
    pytest.param(Case(("data.n_obs=true",), r"data.n_obs must be a positive integer, got True"), id="n-obs-bool"),
    pytest.param(Case(("data.num_workers=abc",), r"data.num_workers must be 0 \(load in the main process\) or more, got 'abc'"), id="num-workers-not-int"),
    pytest.param(Case(("optim.optimizer.lr=abc",), r"optim.optimizer.lr must be a positive number, got 'abc'"), id="lr-not-number"),
    # ---- out-of-range numbers ---------------------------------------------------------------
    pytest.param(Case(("trainer.max_epochs=0",), r"trainer.max_epochs must be a positive integer \(or null\), got 0"), id="max-epochs-zero"),
    pytest.param(Case(("trainer.max_steps=-1",), r"trainer.max_steps must be a positive integer \(or null\), got -1"), id="max-steps-negative"),
    pytest.param(Case(("trainer.limit_train_batches=0",), r"trainer.limit_train_batches must be a positive integer"), id="limit-train-batches-zero"),
    pytest.param(Case(("trainer.eval_every_n_steps=0",), r"trainer.eval_every_n_steps must be a positive integer"), id="eval-every-zero"),
    pytest.param(Case(("trainer.grad_clip_norm=-1",), r"trainer.grad_clip_norm must be a positive number \(or null: no clipping\), got -1"), id="grad-clip-negative"),
    pytest.param(Case(("trainer.grad_clip_norm=0",), r"trainer.grad_clip_norm must be a positive number.*got 0"), id="grad-clip-zero"),
    pytest.param(Case(("trainer.grad_clip_norm=nan",), r"trainer.grad_clip_norm must be a positive number.*got nan"), id="grad-clip-nan"),
    pytest.param(Case(("trainer.precision=half",), r"trainer.precision must be fp32, bf16 or fp16, got 'half'"), id="precision-unknown"),
    pytest.param(Case(("trainer.precision=fp16", "device=cpu"), r"trainer.precision=fp16 needs a CUDA device \(this run uses cpu\); use trainer.precision=bf16 on CPU"), id="precision-fp16-on-cpu"),
    pytest.param(Case(("logger.log_every_n_steps=0",), r"logger.log_every_n_steps must be a positive integer, got 0"), id="log-every-zero"),
    pytest.param(Case(("logger.figures_every_n_evals=0",), r"logger.figures_every_n_evals must be a positive integer, got 0"), id="figures-every-zero"),
    pytest.param(Case(("logger.log_every_n_steps=-1",), r"logger.log_every_n_steps must be a positive integer, got -1"), id="log-every-negative"),
    pytest.param(Case(("optim.optimizer.lr=0",), r"optim.optimizer.lr must be a positive number, got 0"), id="lr-zero"),
    pytest.param(Case(("optim.optimizer.lr=-0.1",), r"optim.optimizer.lr must be a positive number, got -0.1"), id="lr-negative"),
    pytest.param(Case(("optim.optimizer.lr=nan",), r"optim.optimizer.lr must be a positive number, got nan"), id="lr-nan"),
    pytest.param(Case(("optim.optimizer.lr=inf",), r"optim.optimizer.lr must be a positive number, got inf"), id="lr-inf"),
    pytest.param(Case(("optim.scheduler_interval=hour",), r"optim.scheduler_interval must be 'epoch' or 'step', got 'hour'"), id="scheduler-interval"),
    pytest.param(Case(("data.batch_size=0",), r"data.batch_size must be a positive integer, got 0"), id="batch-size-zero"),
    pytest.param(Case(("data.eval_batch_size=0",), r"data.eval_batch_size must be a positive integer, got 0"), id="eval-batch-size-zero"),
    pytest.param(Case(("data.num_workers=-1",), r"data.num_workers must be 0 \(load in the main process\) or more, got -1"), id="num-workers-negative"),
    pytest.param(Case(("data.n_obs=0",), r"data.n_obs must be a positive integer, got 0"), id="n-obs-zero"),
    pytest.param(Case(("data.n_obs=1000",), r"cannot build data \(neuralode.data.spirals.SpiralDataModule\): data.n_obs must lie in \[1, data.n_points=20\], got 1000"), id="n-obs-above-n-points"),
    pytest.param(Case(("data.noise_std=-1",), r"data.noise_std must be >= 0, got -1"), id="noise-std-negative"),
    pytest.param(Case(("data.dt=0",), r"data.dt=0 must be positive"), id="dt-zero"),
    pytest.param(Case(("data.n_eval=12",), r"data.n_eval must lie in \[1, n_spirals=12\), got 12"), id="n-eval-whole-set"),
    pytest.param(Case(("name=",), r"name='' is empty"), id="empty-name"),
    # ---- model arguments (the constructors' own checks, run before the folder exists) -------
    pytest.param(Case(("model.net.obs_std=0",), r"cannot build model.net \(neuralode.models.latent_ode.LatentODE\): obs_std must be positive, got 0"), id="obs-std-zero"),
    pytest.param(Case(("model.net.cell=lstmx",), r"model.net .*cell must be 'gru' or 'rnn', got 'lstmx'"), id="latent-cell"),
    pytest.param(Case(("model.net.activation=foo",), r"model.net .*activation must be one of \['elu', 'relu', 'softplus', 'tanh'\], got 'foo'"), id="latent-activation"),
    pytest.param(Case(("model.net.latent_dim=0",), r"model.net .*latent_dim must be a positive integer, got 0"), id="latent-dim-zero"),
    pytest.param(Case(("model.net.hidden=0",), r"model.net .*hidden must be a positive integer, got 0", base=RNN), id="rnn-hidden-zero"),
    pytest.param(Case(("model.flow.trace=nope",), r"model.flow .*trace='nope' is not a trace estimator; choose one of", base=CNF), id="cnf-trace"),
    pytest.param(Case(("model.flow.field.units=0",), r"model.flow.field .*units >= 1.*got 0", base=CNF), id="cnf-units-zero"),
    pytest.param(Case(("model.flow.t1=0",), r"model.flow .*t1 must be positive, got 0", base=CNF), id="cnf-t1-zero"),
    pytest.param(Case(("data.name=nope",), r"data.name='nope' is not a 2-D toy; choose one of", base=CNF), id="toy-name"),
    pytest.param(Case(("model.flow.direction=up",), r"model.flow .*direction='up' is unknown; choose one of", base=NF), id="nf-direction"),
    pytest.param(Case(("model.flow.layers=0",), r"model.flow .*at least one layer, got layers=0", base=NF), id="nf-layers-zero"),
    pytest.param(Case(("data.energy=u9",), r"unknown energy 'u9'; choose one of \['u1', 'u2', 'u3', 'u4'\]", base=DENSITY), id="energy-name"),
    pytest.param(Case(("data.steps_per_epoch=0",), r"data.steps_per_epoch .* must be positive, got 0", base=DENSITY), id="steps-per-epoch-zero"),
    pytest.param(Case(("data.train_limit=0",), r"data.train_limit must be a positive integer or null, got 0", base=MNIST), id="mnist-train-limit-zero"),
    pytest.param(Case(("data.synthetic_train_size=0",), r"data.synthetic_train_size must be a positive integer, got 0", base=MNIST), id="mnist-synthetic-size-zero"),
    pytest.param(Case(("model.net.channels=0",), r"model.net .*channels >= 1.*got 0", base=MNIST), id="odenet-channels-zero"),
    pytest.param(Case(("data.t_end=-1",), r"data.t_end must be a positive number, got -1", base=POISSON), id="events-t-end-negative"),
    pytest.param(Case(("data.n_grid=1",), r"data.n_grid must be at least 2", base=POISSON), id="events-n-grid-one"),
    # ---- solver settings --------------------------------------------------------------------
    pytest.param(Case(("solver.rtol=0", "solver.atol=0"), r"solver.rtol and solver.atol cannot both be zero"), id="tolerances-both-zero"),
    pytest.param(Case(("solver.rtol=-1",), r"solver.rtol must be a non-negative finite number, got -1"), id="rtol-negative"),
    pytest.param(Case(("solver.atol=inf",), r"solver.atol must be a non-negative finite number, got inf"), id="atol-inf"),
    pytest.param(Case(("solver.method=rk45",), r"solver.method='rk45' is not an ODE method; adaptive methods: .*dopri5"), id="method-unknown"),
    pytest.param(Case(("solver.gradient=foo",), r"solver.gradient='foo' is not a gradient strategy; choose one of direct, adjoint, checkpoint"), id="gradient-unknown"),
    pytest.param(Case(("+solver.options.foo=1",), r"unknown solver.option\(s\) \['foo'\] for adaptive method 'dopri5'; valid options:"), id="option-unknown"),
    pytest.param(Case(("solver.method=rk4", "+solver.options.step_size=-0.1"), r"solver.option 'step_size' must be a positive finite number, got -0.1"), id="step-size-negative"),
    pytest.param(Case(("+solver.options.step_size=0.1",), r"unknown solver.option\(s\) \['step_size'\] for adaptive method"), id="step-size-adaptive"),
    pytest.param(Case(("+solver.options.min_step=2", "+solver.options.max_step=1"), r"solver.options min_step=2 > max_step=1"), id="min-step-above-max-step"),
    pytest.param(Case(("+solver.options.norm=seminorm",), r"solver.option 'norm' must be 'rms' or a callable, got 'seminorm' \('seminorm' applies to the adjoint"), id="seminorm-forward"),
    pytest.param(Case(("+solver.adjoint_options.norm=seminorm",), r"solver.adjoint_options applies to gradient='adjoint' only, not gradient='direct'; remove it or set solver.gradient=adjoint"), id="adjoint-options-direct"),
    pytest.param(Case(("solver.gradient=checkpoint", "+solver.options.checkpoint_every=0"), r"solver.option 'checkpoint_every' must be a positive integer, got 0"), id="checkpoint-every-zero"),
    pytest.param(Case(("solver.gradient=adjoint", "solver.adjoint_rtol=-1"), r"solver.adjoint_rtol must be a non-negative finite number, got -1"), id="adjoint-rtol-negative"),
    pytest.param(Case(("solver.gradient=adjoint", "solver.adjoint_method=rk45"), r"solver.adjoint_method='rk45' is not an ODE method"), id="adjoint-method-unknown"),
    pytest.param(Case(("+solver.options.checkpoint_every=5",), r"checkpoint_every.*gradient"), id="checkpoint-every-without-checkpoint"),
    pytest.param(Case(("solver.gradient=adjoint", "solver.method=rk4", "+solver.adjoint_options.norm=seminorm"), r"seminorm.*adaptive"), id="seminorm-fixed-step-adjoint"),
    # ---- what may be built, and where -------------------------------------------------------
    pytest.param(Case(("model._target_=builtins.open",), r"model._target_='builtins.open' is not one of neuralode's classes .*refusing to build it"), id="target-builtins-open"),
    pytest.param(Case(("data._target_=os.system",), r"data._target_='os.system' is not one of neuralode's classes"), id="target-os-system"),
    pytest.param(Case(("optim.optimizer._target_=torch.optim.Nope",), r"optim.optimizer._target_='torch.optim.Nope' is not one of"), id="target-unknown-optimizer"),
    pytest.param(Case(("model._target_=neuralode.data.mnist.MNISTDataModule",), r"model._target_='neuralode.data.mnist.MNISTDataModule' is not a neuralode.tasks.Task; refusing to build it as model"), id="target-data-class-as-model"),
    pytest.param(Case(("data._target_=torch.optim.SGD",), r"data._target_='torch.optim.SGD' is not a neuralode.data.DataModule"), id="target-optimizer-as-data"),
    pytest.param(Case(("optim.optimizer._target_=torch.optim.lr_scheduler.StepLR",), r"is not a torch.optim optimizer; refusing to build it as optim.optimizer"), id="target-scheduler-as-optimizer"),
    pytest.param(Case(("device=tpu",), r"device='tpu' is not a device; use auto, cpu, cuda or cuda:N"), id="device-unknown"),
    pytest.param(Case(("device=cuda:99",), r"device=cuda:99"), id="device-cuda-99"),
    # ---- checkpoints and run folders --------------------------------------------------------
    pytest.param(Case(("resume=true", "ckpt_path={ckpt}"), r"set either resume=true .* or ckpt_path=<file>, not both"), id="resume-and-ckpt-path"),
    pytest.param(Case(("ckpt_path={tmp}/missing.pt",), r"checkpoint .*missing.pt does not exist"), id="ckpt-missing"),
    pytest.param(Case(("ckpt_path={tmp}/garbage.pt",), r"cannot read checkpoint .*garbage.pt: the file is truncated, corrupt or not a torch file", setup=write_garbage), id="ckpt-garbage"),
    pytest.param(Case(("ckpt_path={tmp}/empty.pt",), r"cannot read checkpoint .*empty.pt", setup=write_empty), id="ckpt-empty-file"),
    pytest.param(Case(("ckpt_path={tmp}/flipped.pt",), r"flipped.pt (is corrupt|: the file is truncated, corrupt)", setup=flip_bytes), id="ckpt-flipped-bytes"),
    pytest.param(Case(("ckpt_path={tmp}/truncated.pt",), r"cannot read checkpoint .*truncated.pt: the file is truncated, corrupt", setup=truncate), id="ckpt-truncated"),
    pytest.param(Case(("ckpt_path={tmp}/foreign.pt",), r"foreign.pt is not a neuralode training checkpoint", setup=foreign_torch_file), id="ckpt-foreign"),
    pytest.param(Case(("ckpt_path={tmp}/pickled.pt",), r"pickled.pt: it holds pickled Python objects", setup=pickled_object), id="ckpt-pickled"),
    pytest.param(Case(("ckpt_path={ckpt}", "data.batch_size=2"), r"resuming .*last.pt with changed settings: data.batch_size: 4 -> 2\. .*allow_changes=\[data.batch_size\]"), id="ckpt-changed-setting"),
    pytest.param(Case(("ckpt_path={ckpt}",), r"resuming .*last.pt with changed settings: .*model._target_.*allow_changes=", base=CNF), id="ckpt-other-experiment"),
    pytest.param(Case((), r"already holds a run \(last.pt, summary.json\); continue it with resume=true", setup=used_run_folder), id="fresh-run-into-used-folder"),
    pytest.param(Case(("resume=true",), r"resume=true but .*last.pt does not exist"), id="resume-no-folder"),
    pytest.param(Case(("resume=true",), r"resume=true but .*last.pt does not exist", setup=empty_folder), id="resume-empty-folder"),
    pytest.param(Case(("resume=true", "data.batch_size=2"), r"changed settings: data.batch_size: 4 -> 2\. .*allow_changes", setup=used_run_folder), id="resume-changed-setting"),
]
# `make test-fast` runs every sixth case (a spread over the sections above); each case composes
# the Hydra config anew (0.2-0.5 s), so the whole table runs in the full suite only.
CASES = [case if i % 6 == 0 else pytest.param(*case.values, id=case.id, marks=[*case.marks, pytest.mark.slow])
         for i, case in enumerate(CASES)]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One step of the tiny latent ODE: a real run folder (last.pt, best.pt, metrics, summary)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(compose("train", list(SPIRAL)), run_dir)
    return run_dir


def snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_train_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """``python -m neuralode train <args>`` in this process: (exit status, stderr). A run that
    gets as far as Hydra's job (a case accepted by mistake) reconfigures logging: undone here."""
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["neuralode train", *args])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        train_cli()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_before_the_run_folder_exists(case: Case, tmp_path, trained_run, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    if case.setup is not None:
        run_dir = case.setup(tmp_path, trained_run) or run_dir
    run_dir_arg = str(run_dir) if case.run_dir is None else case.run_dir.format(tmp=tmp_path)
    before = snapshot(run_dir)
    cwd = tmp_path / "cwd"  # an empty hydra.run.dir would write here
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = [arg.format(tmp=tmp_path, ckpt=trained_run / "last.pt") for arg in case.args]
    code, err = run_train_cli([*case.base, *args, f"hydra.run.dir={run_dir_arg}", f"paths.output_dir={tmp_path}/outputs"],
                              monkeypatch, capsys)
    assert not any(cwd.iterdir()), "something was written into the current directory"

    assert "Traceback" not in err, err
    assert code == 2, f"exit status {code}, stderr:\n{err}"
    assert re.search(case.message, err), f"{case.message!r} not in:\n{err}"
    message = err[err.index("error: "):].strip().splitlines()  # "error: <message>", nothing after it
    assert 1 <= len(message) <= 2, err
    assert snapshot(run_dir) == before, "the run folder was created or changed"
    assert not (tmp_path / "outputs").exists(), "something was written under paths.output_dir"


# ---- eval: the same guarantees --------------------------------------------------------------

EVAL_CASES = [
    pytest.param(("ckpt={ckpt}", "limit_eval_batches=0"), r"limit_eval_batches must be a positive integer", id="eval-limit-zero"),
    pytest.param(("ckpt={ckpt}", "limit_eval_batches=abc"), r"limit_eval_batches=abc: Value 'abc' of type 'str' could not be converted to Integer", id="eval-limit-text"),
    pytest.param(("ckpt={ckpt}", "+data.eval_batch_size=0"), r"data.eval_batch_size must be a positive integer, got 0", id="eval-batch-size-zero"),
    pytest.param(("ckpt={tmp}/missing.pt",), r"ckpt=.*missing.pt: .*missing.pt does not exist", id="eval-ckpt-missing"),
    pytest.param(("ckpt={ckpt}", "hydra.run.dir="), r"hydra.run.dir is empty", id="eval-run-dir-empty"),
]


@pytest.mark.parametrize("args", [p.values[0] for p in EVAL_CASES], ids=[p.id for p in EVAL_CASES])
def test_bad_eval_input_is_refused_before_anything_is_written(args, tmp_path, trained_run, monkeypatch, capsys):
    from neuralode.train.cli import eval_cli

    message = next(p.values[1] for p in EVAL_CASES if p.values[0] == args)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    GlobalHydra.instance().clear()
    argv = [a.format(tmp=tmp_path, ckpt=trained_run / "last.pt") for a in args]
    monkeypatch.setattr(sys, "argv", ["neuralode eval", *argv, f"paths.output_dir={tmp_path}/outputs"])
    with pytest.raises(SystemExit) as stop:
        eval_cli()
    GlobalHydra.instance().clear()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err, err
    assert re.search(message, err), f"{message!r} not in:\n{err}"
    assert not (tmp_path / "outputs").exists() and not any(cwd.iterdir())


# ---- the ODE core's own argument checks, called directly -----------------------------------

class Decay(nn.Module):
    def __init__(self):
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(1.0))

    def forward(self, t, y):
        return -self.rate * y


def decay(t, y):
    return -y


Y0 = torch.ones(2)
T = torch.tensor([0.0, 1.0])

ODE_CASES = [
    pytest.param(lambda: odeint(decay, Y0, T, method="rk45"), InvalidOptionError, r"unknown ODE method 'rk45'; adaptive methods: .*; fixed-step methods: .*rk4", id="method-unknown"),
    pytest.param(lambda: odeint(decay, Y0, T, rtol=-1.0), InvalidOptionError, r"rtol must be a non-negative finite number, got -1.0", id="rtol-negative"),
    pytest.param(lambda: odeint(decay, Y0, T, atol=math.nan), InvalidOptionError, r"atol must be a non-negative finite number, got nan", id="atol-nan"),
    pytest.param(lambda: odeint(decay, Y0, T, rtol=0.0, atol=0.0), InvalidOptionError, r"rtol and atol cannot both be zero", id="tolerances-both-zero"),
    pytest.param(lambda: odeint(decay, (Y0, Y0), T, rtol=(1e-3, 1e-3, 1e-3)), InvalidOptionError, r"rtol is a sequence of 3 values, but y0 is a tuple state of 2 tensors", id="rtol-tuple-length"),
    pytest.param(lambda: odeint(decay, Y0, T, gradient="foo"), InvalidOptionError, r"gradient='foo' is not a gradient strategy; choose one of direct, adjoint, checkpoint", id="gradient-unknown"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"foo": 1}), InvalidOptionError, r"unknown option\(s\) \['foo'\] for adaptive method 'dopri5'; valid options: ", id="option-unknown"),
    pytest.param(lambda: odeint(decay, Y0, T, method="rk4", options={"step_size": -0.1}), InvalidOptionError, r"option 'step_size' must be a positive finite number, got -0.1", id="step-size-negative"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"first_step": 0.0}), InvalidOptionError, r"option 'first_step' must be a positive finite number, got 0.0", id="first-step-zero"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"min_step": 2.0, "max_step": 1.0}), InvalidOptionError, r"options min_step=2.0 > max_step=1.0", id="min-step-above-max-step"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"max_step": -1.0}), InvalidOptionError, r"option 'max_step' must be positive \(inf allowed\), got -1.0", id="max-step-negative"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"max_num_steps": 0}), InvalidOptionError, r"option 'max_num_steps' must be a positive integer, got 0", id="max-num-steps-zero"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"safety": 2.0}), InvalidOptionError, r"option 'safety' must lie in \(0, 1\], got 2.0", id="safety-above-one"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"min_factor": 0.5, "dfactor": 0.5}), InvalidOptionError, r"give options 'min_factor' or its torchdiffeq name 'dfactor', not both", id="factor-and-alias"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"max_factor": 0.5}), InvalidOptionError, r"options need 0 < min_factor <= 1 <= max_factor, got 0.2, 0.5", id="max-factor-below-one"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"dtype": torch.int32}), InvalidOptionError, r"option 'dtype' \(the time dtype\) must be torch.float32 or torch.float64", id="time-dtype-int"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"step_t": [math.nan]}), InvalidOptionError, r"option 'step_t' holds non-finite times", id="step-t-nan"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"norm": "seminorm"}), InvalidOptionError, r"option 'norm' must be 'rms' or a callable, got 'seminorm' \('seminorm' applies to the adjoint", id="seminorm-forward"),
    pytest.param(lambda: odeint(decay, Y0, T, method="rk4", options={"interp": "quadratic"}), InvalidOptionError, r"option 'interp' must be 'linear' or 'cubic', got 'quadratic'", id="interp-unknown"),
    pytest.param(lambda: odeint(decay, Y0, T, method="rk4", options={"step_size": 0.1, "grid_constructor": lambda f, y, t: t}), InvalidOptionError, r"give options 'step_size' or 'grid_constructor', not both", id="step-size-and-grid"),
    pytest.param(lambda: odeint(decay, Y0, T, options={"checkpoint_every": 5}), InvalidOptionError, r"options.checkpoint_every applies to gradient='checkpoint' only, not gradient='direct'; remove it or set gradient=checkpoint", id="checkpoint-every-direct"),
    pytest.param(lambda: odeint(Decay(), Y0, T, gradient="checkpoint", options={"checkpoint_every": 0}), InvalidOptionError, r"option 'checkpoint_every' must be a positive integer, got 0", id="checkpoint-every-zero"),
    pytest.param(lambda: odeint(decay, Y0, T, adjoint_rtol=1e-3), InvalidOptionError, r"adjoint_rtol applies to gradient='adjoint' only, not gradient='direct'; remove it or set gradient=adjoint", id="adjoint-rtol-direct"),
    pytest.param(lambda: odeint_adjoint(Decay(), Y0, T, adjoint_method="rk4", adjoint_options={"norm": "seminorm"}), InvalidOptionError, r"norm='seminorm' needs an adaptive adjoint method, got 'rk4'", id="seminorm-fixed-step-adjoint"),
    pytest.param(lambda: odeint_adjoint(decay, Y0, T), AdjointParamsError, r"gradient='adjoint' cannot find the parameters to differentiate: func is not an nn.Module\. Pass adjoint_params=", id="adjoint-params-unknown"),
    pytest.param(lambda: odeint(decay, Y0, torch.tensor([0.0, 1.0, 2.0]), event_fn=lambda t, y: y[0] - 0.5), InvalidOptionError, r"with event_fn, t must hold 2 times .*, got 3", id="event-three-times"),
    pytest.param(lambda: odeint(decay, Y0, [0.0, 1.0]), InvalidTimeError, r"t must be a 1-D torch.Tensor of output times, got list", id="t-list"),
    pytest.param(lambda: odeint(decay, Y0, torch.zeros(2, 2)), InvalidTimeError, r"t must be a non-empty 1-D tensor, got shape \(2, 2\)", id="t-two-dimensional"),
    pytest.param(lambda: odeint(decay, Y0, torch.tensor([0.0, math.nan])), InvalidTimeError, r"t contains non-finite values", id="t-nan"),
    pytest.param(lambda: odeint(decay, Y0, torch.tensor([0.0, 1.0, 0.5])), InvalidTimeError, r"strictly", id="t-not-monotone"),
    pytest.param(lambda: odeint(decay, torch.ones(2, dtype=torch.long), T), StateMismatchError, r"y0 must be a floating-point tensor, got dtype torch.int64", id="y0-integer"),
    pytest.param(lambda: odeint(lambda t, y: torch.zeros(3), Y0, T), StateMismatchError, r"func returned .*3.*2|shape", id="func-wrong-shape"),
    pytest.param(lambda: odeint(decay, torch.ones(0), T), StateMismatchError, r"y0 has no elements \(shape \(0,\)\)", id="y0-empty"),
    pytest.param(lambda: odeint(decay, torch.ones(2, dtype=torch.float16), T), InvalidOptionError, r"y0 is torch.float16, whose precision cannot resolve rtol=1e-07 .*give y0 in float32", id="y0-float16-adaptive"),
    pytest.param(lambda: odeint(decay, Y0, T, event_fn=lambda t, y: bool(y[0] > 0.5)), InvalidOptionError, r"event_fn\(t, y\) must return a floating-point tensor .*got bool", id="event-fn-bool"),
    pytest.param(lambda: odeint(decay, torch.ones(3), T, atol=torch.full((2,), 1e-6)), InvalidOptionError, r"atol has shape \(2,\), which does not broadcast to the state's shape \(3,\)", id="atol-wrong-shape"),
    pytest.param(lambda: odeint_adjoint(decay, Y0, T, adjoint_params=[1.0]), AdjointParamsError, r"adjoint_params\[0\] is a float, not a tensor", id="adjoint-params-not-tensors"),
    pytest.param(lambda: odeint(decay, Y0, T, method="rk4", options={"step_size": 1e-9}), InvalidOptionError, r"step_size=1e-09 over \[t=0, t=1\] makes 1,000,000,000 steps, more than max_num_steps=1,000,000", id="grid-too-long"),
    pytest.param(lambda: sdeint(decay, lambda t, y: 0.1 * torch.ones_like(y), Y0, T, dt=1e-9), InvalidOptionError, r"dt=1e-09 over \[t=0, t=1\] makes 1,000,000,000 steps, more than max_num_steps", id="sde-grid-too-long"),
    pytest.param(lambda: sdeint(decay, lambda t, y: 0.1 * torch.ones_like(y), torch.full((2,), math.nan), T, dt=0.1), NonFiniteStateError, r"the initial state or its derivative is non-finite", id="sde-y0-nan"),
    pytest.param(lambda: SolverSettings.from_any({"method": "scipy_solver", "gradient": "direct"}), InvalidOptionError, r"solver.method=scipy_solver passes no gradient through its steps", id="settings-scipy-direct"),
    pytest.param(lambda: SolverSettings.from_any({"adjoint": True}), InvalidOptionError, r"unknown solver setting\(s\) \['adjoint'\]; valid: .*\('adjoint: true/false' is now 'gradient: adjoint/direct'\)", id="settings-renamed-adjoint"),
    pytest.param(lambda: SolverSettings.from_any({"gradient": "direct", "adjoint_rtol": 1e-3}), InvalidOptionError, r"solver.adjoint_rtol applies to gradient='adjoint' only, not gradient='direct'", id="settings-adjoint-rtol-direct"),
    pytest.param(lambda: SolverSettings.from_any({"gradient": "direct", "options": {"checkpoint_every": 5}}), InvalidOptionError, r"checkpoint_every.*gradient", id="settings-checkpoint-every-direct"),
    pytest.param(lambda: SolverSettings.from_any({"gradient": "adjoint", "adjoint_method": "rk4", "adjoint_options": {"norm": "seminorm"}}), InvalidOptionError, r"seminorm.*adaptive", id="settings-seminorm-fixed-step-adjoint"),
]


@pytest.mark.parametrize("call, error, message", ODE_CASES)
def test_bad_ode_argument_raises_a_named_one_line_error(call, error, message):
    with pytest.raises(error) as raised:
        call()
    text = str(raised.value)
    assert "\n" not in text, text
    assert re.search(message, text), f"{message!r} not in {text!r}"
