"""Checkpoint files: atomic writes, safe loading, clear errors, and the random states they carry."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from neuralode.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from neuralode.train.seeding import get_rng_state, set_rng_state
from tests.blobs import make_trainer


def draws(generator: torch.Generator) -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist(), torch.rand(2, generator=generator).tolist()


@pytest.fixture
def checkpoint(tmp_path):
    make_trainer(tmp_path, max_steps=2, logging=None).fit()
    return tmp_path / "last.pt"


def test_checkpoint_holds_the_whole_training_state(checkpoint):
    state = load_checkpoint(checkpoint)
    assert {"model", "optimizer", "scheduler", "progress", "rng", "history", "config"} <= set(state)
    assert state["progress"]["step"] == 2 and state["progress"]["batch_in_epoch"] == 2
    assert state["history"][-1]["step"] == 2 and state["config"]["name"] == "blobs"
    assert state["optimizer"]["state"], "SGD momentum buffers are saved"


def test_rng_state_round_trip_reproduces_every_stream():
    generator = torch.Generator().manual_seed(5)
    state = get_rng_state(generator)
    first = draws(generator)
    set_rng_state(state, generator)
    assert draws(generator) == first


def test_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "bad": Unpicklable()})
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_checkpoint_gets_a_clear_error(checkpoint):
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a torch file"):
        load_checkpoint(checkpoint)


def test_garbage_and_missing_files_get_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a torch file"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_foreign_checkpoint_is_refused(tmp_path):
    foreign = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)  # a bare state_dict, not ours
    with pytest.raises(CheckpointError, match="not a neuralode training checkpoint"):
        load_checkpoint(foreign)


def test_checkpoint_with_pickled_code_is_not_loaded(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "neuralode-checkpoint", "payload": random.Random()}, path)  # an arbitrary class
    with pytest.raises(CheckpointError, match="holds pickled Python objects"):
        load_checkpoint(path)


def test_resuming_a_different_model_is_refused(tmp_path, checkpoint):
    trainer = make_trainer(tmp_path / "other", ode=True, max_steps=4)
    with pytest.raises(CheckpointError, match="different model"):
        trainer.fit(ckpt_path=checkpoint)
