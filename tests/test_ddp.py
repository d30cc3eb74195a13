"""Data-parallel training under torchrun: two CPU processes (gloo) train like one process on the
same global batch, share one run folder that rank 0 alone writes, and their checkpoint resumes
in a single process."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from neuralode.train import cli, run
from neuralode.train.checkpoint import load_checkpoint
from neuralode.train.config import ConfigError, compose
from neuralode.train.distributed import ShardedShuffle, StridedShard, device_for_rank, per_rank_batch_size
from neuralode.train.loggers import read_metrics
from tests.blobs import tiny_mnist

#: torchrun's variables: a test run from inside a distributed job must not inherit them.
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")

#: ODE-Net with the adjoint (the gradient DDP must all-reduce comes out of the adjoint solve).
#: Fixed-step rk4 and no augmentation: a batch's result does not depend on how it is split (an
#: adaptive solver's step sizes depend on every example of the batch it solves).
ODENET = tiny_mnist("mnist_odenet", "solver=rk4", "data.augment=false", "trainer.eval_every_n_steps=2")


def torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "neuralode", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[key].double() - b[key].double()).abs().max().item() for key in a)


@pytest.mark.slow
def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path):
    assert compose("train", ODENET).solver.gradient == "adjoint"
    outputs = tmp_path / "outputs"
    result = torchrun("train", *ODENET, "trainer.max_steps=3", f"paths.output_dir={outputs}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # One run folder, decided by rank 0; Hydra's files, events and checkpoints written once.
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"] and [p.name for p in outputs.iterdir()] == ["mnist_odenet"]
    (run_dir,) = (outputs / "mnist_odenet").iterdir()
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "train.log").read_text().count("run directory:") == 1  # rank 0's log only
    assert json.loads((run_dir / "summary.json").read_text())["world_size"] == 2

    single = tmp_path / "single"
    run.train(compose("train", [*ODENET, "trainer.max_steps=3"]), single)
    ddp_state, single_state = load_checkpoint(run_dir / "last.pt"), load_checkpoint(single / "last.pt")
    # The unwrapped task's parameters (no DDP "module." prefix), equal up to summation order;
    # without the gradient all-reduce they differ by about 4e-3 after these 3 steps.
    assert max_difference(ddp_state["model"], single_state["model"]) < 1e-5
    ddp_records, single_records = read_metrics(run_dir), read_metrics(single)
    assert [r["step"] for r in ddp_records] == [r["step"] for r in single_records] == [2, 3]
    for ddp, one in zip(ddp_records, single_records):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_error", "nfe_forward", "nfe_backward", "test_nfe_forward"):
            assert ddp[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key

    # The DDP checkpoint continues in a single process like the single-process run does.
    from_ddp, straight = tmp_path / "from_ddp", tmp_path / "straight"
    run.train(compose("train", [*ODENET, "trainer.max_steps=5", f"ckpt_path={run_dir / 'last.pt'}"]), from_ddp)
    run.train(compose("train", [*ODENET, "trainer.max_steps=5"]), straight)
    assert [r["step"] for r in read_metrics(from_ddp)] == [2, 3, 4, 5]  # the DDP run's records kept
    resumed, reference = load_checkpoint(from_ddp / "last.pt"), load_checkpoint(straight / "last.pt")
    assert resumed["progress"]["epoch"] == reference["progress"]["epoch"] == 1
    assert max_difference(resumed["model"], reference["model"]) < 1e-4


@pytest.mark.parametrize("n", [12, 13, 15], ids=["full-batches", "short-last-batches", "short-global-full-per-rank"])
def test_rank_shards_make_up_the_single_process_batches(n):
    global_batch, world = 4, 2
    single = DataLoader(list(range(n)), batch_size=global_batch, shuffle=True, generator=torch.Generator().manual_seed(5))
    shards = []
    for rank in range(world):
        generator = torch.Generator().manual_seed(5)  # the trainer's shuffle generator, the same on every rank
        sampler = ShardedShuffle(n, rank, world, generator, global_batch)
        shards.append(DataLoader(list(range(n)), batch_size=global_batch // world, sampler=sampler, generator=generator))
    per_rank = -(-n // world)  # every rank gets as many examples (padded by wrapping around)
    for _ in range(3):  # epochs: each rank's generator must advance as the single process's does
        # As the trainer does: len(loader) batches, never asking for one more.
        expected = [batch.tolist() for batch in itertools.islice(single, len(single))]
        got = [[a.tolist(), b.tolist()] for a, b in itertools.islice(zip(*shards), len(shards[0]))]
        assert len(shards[0]) == len(shards[1]) == len(got) == -(-per_rank // (global_batch // world))
        for k in range(n // global_batch):  # full global batches: rank r holds positions r, r + 2
            assert got[k][0] == expected[k][0::2] and got[k][1] == expected[k][1::2]
        if n % global_batch:  # the short last batch, plus the padding taken from the epoch's start
            padding = expected[0][: per_rank * world - n]
            assert sorted(got[-1][0] + got[-1][1]) == sorted(expected[-1] + padding)

    evaluated = [list(StridedShard(10, rank, 3)) for rank in range(3)]
    assert sorted(sum(evaluated, [])) == list(range(10))  # each example on exactly one rank


@pytest.mark.parametrize("subcommand, args, message", [
    ("train", ["-m", "seed=0,1"], "torchrun trains one run"),
    ("eval", ["ckpt=x.pt"], "start it without torchrun"),
])
def test_what_torchrun_cannot_run_is_refused(monkeypatch, capsys, subcommand, args, message):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "argv", [f"neuralode {subcommand}", *args])
    with pytest.raises(SystemExit) as exit_info:
        (cli.train_cli if subcommand == "train" else cli.eval_cli)()
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_global_batch_must_split_evenly_and_gpus_must_go_round(monkeypatch):
    assert per_rank_batch_size(128, 4) == 32
    with pytest.raises(ConfigError, match=r"data.batch_size=10 .* multiple of 4"):
        per_rank_batch_size(10, 4)
    assert device_for_rank(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(torch.cuda.device_count() + 1))
    with pytest.raises(ConfigError, match="one GPU per process"):
        device_for_rank(torch.device("cuda"))
