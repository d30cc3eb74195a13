"""No config read from a checkpoint, a run folder or the command line builds anything but
neuralode's own classes and torch's optimisers and schedulers (a shared checkpoint whose config
said ``_target_: builtins.open`` truncated a file on evaluation)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from neuralode.train.checkpoint import save_checkpoint
from neuralode.train.config import CONFIG_DIR, ConfigError, compose
from neuralode.train.targets import check_targets, is_allowed_target
from tests.blobs import tiny_mnist
from tests.helpers import slow_when

TOY_DATA = {"_target_": "neuralode.data.toy2d.Toy2DDataModule"}


def configured_targets() -> list[str]:
    """Every ``_target_`` the configs name, but Hydra's own launcher plugins (never built by us)."""
    found = set()
    for file in CONFIG_DIR.rglob("*.yaml"):
        if "hydra" in file.relative_to(CONFIG_DIR).parts:
            continue
        found.update(re.findall(r"_target_:\s*([\w.]+)", file.read_text()))
    return sorted(found)


@pytest.mark.parametrize("target", configured_targets())
def test_every_target_in_the_configs_is_allowed(target):
    assert is_allowed_target(target)


@pytest.mark.parametrize(
    "target",
    [
        "builtins.open", "os.system", "subprocess.run", "shutil.rmtree", "builtins.exec", "functools.partial",
        "torch.save", "torch.load", "torch.optim.SGD.step",  # torch, but not an optimiser or scheduler class
        "neuralode.data.mnist.write_idx",  # a neuralode function that writes a file
        "neuralode.data.mnist.Path",  # pathlib's class, imported into a neuralode module
        "neuralode.models.cnf.nn",  # a module
        "neuralode.train.checkpoint.CheckpointError",  # neuralode, but not models, tasks or data
        "neuralode.paper.runs.RunSpec", "neuralode.nope.Thing", "neuralode.models.cnf.CNF.forward",
        "${oc.env:TARGET}", "open", "", None, 3, ["builtins.open"],
    ],
)
def test_anything_else_is_refused(target):
    assert not is_allowed_target(target)


def test_a_refused_target_has_never_been_imported():
    """Checking a name imports its module only when that module is neuralode's or torch.optim."""
    name = "json.tool"  # a standard-library module no test imports
    sys.modules.pop(name, None)
    assert not is_allowed_target(f"{name}.main")
    assert name not in sys.modules


def test_message_names_where_the_key_and_the_target():
    config = {"model": {"_target_": "neuralode.tasks.classification.ClassificationTask",
                        "net": {"_target_": "builtins.open", "file": "/tmp/x", "mode": "w"}},
              "data": {**TOY_DATA, "transforms": [{"_target_": "os.system", "command": "true"}]}}
    with pytest.raises(ConfigError) as error:
        check_targets(config, "checkpoint runs/x/last.pt")
    assert str(error.value) == (
        "checkpoint runs/x/last.pt: model.net._target_='builtins.open' is not one of neuralode's classes "
        "(models, tasks, data) nor a torch.optim optimizer or scheduler; refusing to build it")
    del config["model"]["net"]
    with pytest.raises(ConfigError, match=r"data\.transforms\[0\]\._target_='os\.system'"):
        check_targets(config, "config")


def test_interpolated_target_is_checked_as_resolved():
    config = OmegaConf.create({"evil": "builtins.open", "model": {"_target_": "${evil}"}, "data": TOY_DATA})
    with pytest.raises(ConfigError, match="model._target_='builtins.open'"):
        check_targets(config, "config")
    with pytest.raises(ConfigError, match="model._target_='builtins.open'"):
        check_targets({"model": config.model}, "config")  # a node inside a bigger config


# `make test-fast`: one experiment of each family (each composes anew, 0.3 s).
@pytest.mark.parametrize("experiment", [
    slow_when(e not in ("mnist_odenet", "latent_ode_spiral", "cnf_toy2d", "sdenet_mnist"), e, id=e)
    for e in sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))])
def test_composed_experiments_pass(experiment):
    check_targets(compose("train", [f"experiment={experiment}"]), experiment)


# --------------------------------------------------------------------------- through the loaders


def crafted_checkpoint(path, victim, where: str = "model") -> None:
    """A checkpoint, well-formed and with a valid digest, whose stored config builds open(victim, "w")."""
    evil = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    model = evil if where == "model" else {"_target_": "neuralode.tasks.classification.ClassificationTask",
                                           "net": evil}
    save_checkpoint(path, {
        "model": {"w": torch.zeros(2)}, "optimizer": {}, "progress": {"step": 1},
        "rng": {}, "history": [], "config": {"name": "shared", "model": model, "data": TOY_DATA},
    })


@pytest.fixture
def victim(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me\n")
    return victim


@pytest.mark.parametrize("where", ["model", "model.net"])
def test_evaluate_checkpoint_refuses_a_stored_foreign_target(tmp_path, victim, where):
    from neuralode.train.run import evaluate_checkpoint

    ckpt = tmp_path / "run" / "best.pt"
    crafted_checkpoint(ckpt, victim, where)
    missing = tmp_path / "never.txt"
    crafted_checkpoint(tmp_path / "other" / "last.pt", missing, where)
    with pytest.raises(ConfigError) as error:
        evaluate_checkpoint(tmp_path / "run", device="cpu")  # a run folder: its best.pt
    assert str(error.value).startswith(f"checkpoint {ckpt}: {where}._target_='builtins.open' is not one of")
    with pytest.raises(ConfigError):
        evaluate_checkpoint(tmp_path / "other" / "last.pt", device="cpu")
    assert victim.read_text() == "do not truncate me\n"
    assert not missing.exists()


def test_evaluate_checkpoint_refuses_a_foreign_data_override(tmp_path, victim):
    from neuralode.train.run import evaluate_checkpoint

    ckpt = tmp_path / "last.pt"
    save_checkpoint(ckpt, {
        "model": {}, "optimizer": {}, "progress": {"step": 1}, "rng": {}, "history": [],
        "config": {"model": {"_target_": "neuralode.tasks.classification.ClassificationTask"}, "data": TOY_DATA},
    })
    with pytest.raises(ConfigError, match="data._target_='builtins.open'"):
        evaluate_checkpoint(ckpt, device="cpu", data_overrides={"_target_": "builtins.open", "file": str(victim)})
    assert victim.read_text() == "do not truncate me\n"


def test_paper_loaders_refuse_a_stored_foreign_target(tmp_path, victim):
    from neuralode.paper import flows, runs

    run = tmp_path / "run"
    crafted_checkpoint(run / "last.pt", victim)
    with pytest.raises(ConfigError, match=f"checkpoint {re.escape(str(run / 'last.pt'))}: model._target_"):
        runs.load_trained(run)
    with pytest.raises(SystemExit, match="^error: checkpoint .*refusing to build it$"):
        runs.load_trained_or_exit(run / "last.pt")
    with pytest.raises(ConfigError, match="model._target_='builtins.open'"):
        flows.load_task(run)
    assert victim.read_text() == "do not truncate me\n"


def test_build_task_and_data_refuses_a_command_line_override(victim):
    from neuralode.train.run import build_task_and_data

    cfg = compose("train", tiny_mnist("mnist_mlp", "model._target_=builtins.open", f"+model.file={victim}",
                                      "+model.mode=w", "~model.net"))
    with pytest.raises(ConfigError, match="^config: model._target_='builtins.open' is not one of"):
        build_task_and_data(cfg.model, cfg.data)
    assert victim.read_text() == "do not truncate me\n"


@pytest.mark.slow
def test_cli_refuses_a_foreign_target_in_one_line(tmp_path, victim):
    result = subprocess.run(
        [sys.executable, "-m", "neuralode", "train", *tiny_mnist("mnist_mlp", "model._target_=builtins.open"),
         f"+model.file={victim}", "+model.mode=w", "~model.net", f"paths.output_dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "error: config: model._target_='builtins.open' is not one of neuralode's classes" in result.stderr
    assert "Traceback" not in result.stderr
    assert victim.read_text() == "do not truncate me\n"
