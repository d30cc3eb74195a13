"""The shared trainer: logs, NFE, checkpoints and exact resume, on a tiny task and on every
MNIST experiment (composed from configs/, generated images, a couple of steps on CPU)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from neuralode.train.config import ConfigError, LoggerConfig, compose
from neuralode.train.loggers import read_metrics
from neuralode.train.run import train
from neuralode.train.run_dirs import lock_run_dir
from neuralode.train.seeding import resolve_device
from neuralode.train.signals import Interrupted
from neuralode.train.divergence import TrainingError
from tests.blobs import make_trainer, tiny_mnist
from tests.helpers import slow_when

#: Differ between two identical runs: wall time and the process's memory high-water mark.
UNREPRODUCIBLE = ("epoch_time_s", "eval_time_s", "peak_rss_mb")


def reproducible(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in UNREPRODUCIBLE}


def events(run_dir) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator


def scalar_tags(run_dir) -> set[str]:
    return set(events(run_dir).Tags()["scalars"])


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_fit_writes_metrics_events_checkpoints_and_summary(tmp_path):
    trainer = make_trainer(tmp_path, ode=True, max_epochs=2)
    summary = trainer.fit()

    records = read_metrics(tmp_path)
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 4), (2, 8)]
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "test_error", "nfe_forward",
                "nfe_backward", "test_nfe_forward", "lr", "epoch_time_s", "peak_saved_tensors_mb", "peak_rss_mb"):
        assert key in records[-1], key
    assert records[-1]["nfe_forward"] > 0 and records[-1]["nfe_backward"] > 0
    assert records[-1]["peak_saved_tensors_mb"] > 0
    assert [r["lr"] for r in records] == [0.1, 0.05]  # StepLR(gamma 0.5) steps once per epoch
    assert records[-1]["test_loss"] < records[0]["test_loss"] or records[-1]["test_error"] <= records[0]["test_error"]

    logged = events(tmp_path)
    assert {"train/loss", "test/error", "test/loss", "nfe/forward", "nfe/backward", "time/epoch_s", "optim/lr",
            "memory/peak_mb", "memory/peak_saved_tensors_mb", "memory/peak_rss_mb"} <= set(logged.Tags()["scalars"])
    assert logged.Tags()["images"] == ["figures/inputs"]  # the task's figures()
    assert "config/text_summary" in logged.Tags()["tensors"]
    assert "_hparams_/experiment" in logged.PluginTagToContent("hparams")
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file()
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["num_parameters"] == summary["num_parameters"] == sum(p.numel() for p in trainer.task.parameters())
    assert saved["final"] == records[-1] and saved["steps"] == 8 and saved["epochs"] == 2


def test_figures_are_drawn_at_the_first_evaluation_every_nth_and_the_last(tmp_path):
    make_trainer(tmp_path, max_epochs=6, logging=LoggerConfig(figures_every_n_evals=4)).fit()
    drawn = [event.step for event in events(tmp_path).Images("figures/inputs")]
    assert drawn == [4, 20, 24]  # evaluations 1, 5 and 6 (the last), at 4 steps an epoch


def test_without_a_terminal_progress_is_logged_as_lines(tmp_path, caplog):
    """tqdm is off when stderr is not a terminal (as under pytest): a line every
    log_every_n_steps steps instead, with the batch, step, loss, NFE, rate and time left."""
    trainer = make_trainer(tmp_path, ode=True, max_epochs=1, progress_bar=True,
                           logging=LoggerConfig(tensorboard=False, log_figures=False, log_every_n_steps=2))
    with caplog.at_level("INFO", logger="neuralode.train.trainer"):
        trainer.fit()
    lines = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
    assert [re.match(r"epoch 1/1 batch (\d)/4 step \1: loss [\d.]+ .*nfe \d+/\d+, [\d.]+ steps/s, epoch done in \d+m\d\ds",
                     line) is not None for line in lines] == [True, True], lines


def test_progress_lines_are_due_by_steps_or_by_time():
    from neuralode.train.loggers import ProgressLines

    now = [0.0]
    lines = ProgressLines(every_n_steps=100, every_s=60.0, clock=lambda: now[0])
    scalars = {"loss": 1.0, "n_solves": 0}
    now[0] = 10.0
    assert lines.update("epoch 1/1", 5, 1000, 5, scalars) is None  # neither 100 steps nor a minute yet
    now[0] = 61.0
    assert lines.update("epoch 1/1", 6, 1000, 6, scalars) == ("epoch 1/1 batch 6/1000 step 6: loss 1.0000, "
                                                              "0.10 steps/s, epoch done in 2h48m")
    now[0] = 62.0
    assert lines.update("epoch 1/1", 106, 1000, 106, scalars) is not None  # 100 steps since the last line


def test_a_shared_checkpoint_reads_this_machines_data_folder(tmp_path):
    """The stored data.root names the author's machine: load_trained puts data_dir there, unless
    the data overrides name a root themselves."""
    from neuralode.train.run import load_trained

    run_dir = tmp_path / "run"
    train(compose("train", tiny_mnist("mnist_mlp", f"paths.data_dir={tmp_path}/theirs")), run_dir)
    _, data, _ = load_trained(run_dir / "last.pt", data_dir=str(tmp_path / "mine"))
    assert str(data.root) == str(tmp_path / "mine")
    _, data, _ = load_trained(run_dir / "last.pt", data_overrides={"root": str(tmp_path / "given")},
                              data_dir=str(tmp_path / "mine"))
    assert str(data.root) == str(tmp_path / "given")


def test_broken_run_files_are_named_with_the_place(tmp_path):
    from neuralode.files import BrokenFileError, read_json, read_json_lines

    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(BrokenFileError, match=r"summary.json is not valid JSON \(line 1, column 2: .*\); the run"):
        read_json(tmp_path / "summary.json")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n\ngarbage\n')
    with pytest.raises(BrokenFileError, match=r"metrics.jsonl, line 3, is not valid JSON .*'garbage'; remove the line"):
        read_json_lines(tmp_path / "metrics.jsonl")


def test_a_table_of_a_run_with_a_broken_summary_is_one_line(tmp_path, capsys):
    from neuralode.paper.cli import dispatch

    run_dir = tmp_path / "run"
    train(compose("train", tiny_mnist("mnist_mlp")), run_dir)
    (run_dir / "summary.json").write_text("{not json")
    with pytest.raises(SystemExit) as stop:
        dispatch("table", ["table1", str(run_dir), "--out", str(tmp_path / "tables")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert re.fullmatch(r"error: .*summary.json is not valid JSON \(line 1, column 2: .*\n", err), err


def test_no_nfe_keys_for_a_model_without_ode(tmp_path):
    make_trainer(tmp_path, ode=False, max_steps=2).fit()
    record = read_metrics(tmp_path)[-1]
    assert record["step"] == 2 and record["epoch"] == 1  # stopped by max_steps inside epoch 1
    assert not any(key.startswith("nfe") or "nfe" in key for key in record)
    assert not any(tag.startswith("nfe/") for tag in scalar_tags(tmp_path))


def test_limits_and_evaluation_every_n_steps(tmp_path):
    make_trainer(tmp_path, max_epochs=2, limit_train_batches=3, eval_every_n_steps=2, limit_eval_batches=1).fit()
    records = read_metrics(tmp_path)
    # 3 batches an epoch; an extra evaluation at step 2 and 4 (inside an epoch), none at 6 (its end).
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 2), (1, 3), (2, 4), (2, 6)]


@pytest.mark.parametrize("stop_at", [2, 4], ids=["inside-epoch", "epoch-end"])
@pytest.mark.parametrize("ode", [False, True], ids=["linear", "ode"])
def test_resume_gives_exactly_the_uninterrupted_run(tmp_path, stop_at, ode):
    straight = make_trainer(tmp_path / "straight", ode=ode, max_steps=6)
    straight.fit()

    make_trainer(tmp_path / "resumed", ode=ode, max_steps=stop_at).fit()
    resumed = make_trainer(tmp_path / "resumed", ode=ode, seed=123, max_steps=6)  # the seed must not matter
    resumed.fit(ckpt_path=tmp_path / "resumed" / "last.pt")

    assert_same_parameters(straight.task, resumed.task)
    expected = [reproducible(r) for r in read_metrics(tmp_path / "straight")]
    steps = {r["step"] for r in expected}  # the resumed run also has the record of its stop
    assert [reproducible(r) for r in read_metrics(tmp_path / "resumed") if r["step"] in steps] == expected


def test_summary_names_the_commits_that_trained_the_run(tmp_path, monkeypatch):
    from neuralode import source
    from neuralode.train import trainer as trainer_module

    make_trainer(tmp_path, max_steps=2).fit()
    here = source.source_commit()
    assert re.fullmatch(r"unknown|[0-9a-f]{4,40}(\+dirty)?", here)
    assert json.loads((tmp_path / "summary.json").read_text())["commits"] == [here]

    # Resumed on other code: both commits, in order; resumed again on that code: no repeat.
    monkeypatch.setattr(trainer_module, "source_commit", lambda: "0a1b2c3")
    for steps in (4, 6):
        make_trainer(tmp_path, max_steps=steps).fit(ckpt_path=tmp_path / "last.pt")
        assert json.loads((tmp_path / "summary.json").read_text())["commits"] == [here, "0a1b2c3"]

    # A checkpoint from before runs recorded commits: what trained it is unknown.
    from neuralode.train.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(tmp_path / "last.pt")
    del state["commits"]
    save_checkpoint(tmp_path / "old.pt", state)
    make_trainer(tmp_path, max_steps=8).fit(ckpt_path=tmp_path / "old.pt")
    assert json.loads((tmp_path / "summary.json").read_text())["commits"] == ["unknown", "0a1b2c3"]


def test_source_commit_names_the_checkout_and_its_uncommitted_changes(tmp_path, monkeypatch):
    from neuralode import source

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def commit_of(root):
        monkeypatch.setattr(source, "REPO_ROOT", root)
        source.source_commit.cache_clear()
        return source.source_commit()

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout.strip()

    try:
        assert commit_of(tmp_path) == "unknown"  # not a checkout
        git("init", "-q")
        (tmp_path / "tracked.txt").write_text("a")
        git("add", "tracked.txt")
        git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "first")
        head = git("rev-parse", "--short", "HEAD")
        assert commit_of(tmp_path) == head
        (tmp_path / "untracked.txt").write_text("b")
        assert commit_of(tmp_path) == head  # files git does not track are not the source
        (tmp_path / "tracked.txt").write_text("c")
        assert commit_of(tmp_path) == head + "+dirty"
    finally:
        source.source_commit.cache_clear()


def test_ctrl_c_saves_last_checkpoint_and_the_run_resumes_exactly(tmp_path):
    straight = make_trainer(tmp_path / "straight", max_steps=6)
    straight.fit()

    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "run", max_steps=6, interrupt_at_step=3).fit()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["progress"]["step"] == 3 and state["progress"]["batch_in_epoch"] == 3

    resumed = make_trainer(tmp_path / "run", max_steps=6)
    resumed.fit(ckpt_path=tmp_path / "run" / "last.pt")
    assert_same_parameters(straight.task, resumed.task)
    assert [reproducible(r) for r in read_metrics(tmp_path / "run")] == [
        reproducible(r) for r in read_metrics(tmp_path / "straight")]


def test_sigterm_at_an_evaluation_step_keeps_that_evaluation_and_resumes_exactly(tmp_path):
    """A cluster's preemption notice (SIGTERM) during step 2, whose end is an evaluation step:
    the step finishes, its evaluation is logged, last.pt is saved; the resume matches."""
    settings = dict(max_steps=6, eval_every_n_steps=2)
    make_trainer(tmp_path / "straight", **settings).fit()
    with pytest.raises(Interrupted) as stopped:
        make_trainer(tmp_path / "run", interrupt_at_step=2, interrupt_signal=signal.SIGTERM, **settings).fit()
    assert stopped.value.signum == signal.SIGTERM
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [2]  # the evaluation due at step 2
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["progress"]["step"] == 2
    make_trainer(tmp_path / "run", **settings).fit(ckpt_path=tmp_path / "run" / "last.pt")
    assert [reproducible(r) for r in read_metrics(tmp_path / "run")] == [
        reproducible(r) for r in read_metrics(tmp_path / "straight")]


def test_a_death_between_best_and_last_never_leaves_best_at_a_worse_step(tmp_path, monkeypatch):
    """best.pt is written before last.pt: a process killed between the two resumes one
    evaluation back, redoes it, and best.pt and summary.json agree with metrics.jsonl."""
    from neuralode.train.trainer import Trainer

    save = Trainer._save
    deaths = iter([False, True])  # at the second improvement: after best.pt, before last.pt

    def dying_save(self, *names):
        for name in names:
            save(self, name)
            if name == "best.pt" and next(deaths, False):
                raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", dying_save)
    settings = dict(max_epochs=2, eval_every_n_steps=1)  # test error improves at steps 1, 2, 3, 4
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path, **settings).fit()
    assert torch.load(tmp_path / "best.pt", weights_only=True)["progress"]["step"] == 2
    assert torch.load(tmp_path / "last.pt", weights_only=True)["progress"]["step"] == 1
    monkeypatch.setattr(Trainer, "_save", save)
    summary = make_trainer(tmp_path, **settings).fit(ckpt_path=tmp_path / "last.pt")
    records = read_metrics(tmp_path)
    best = min(records, key=lambda r: r["test_error"])
    stored = torch.load(tmp_path / "best.pt", weights_only=True)
    assert stored["progress"]["best"] == best["test_error"] == summary["best"]["test_error"]
    assert stored["history"][-1]["test_error"] == best["test_error"]


def test_one_process_per_run_folder(tmp_path):
    held = lock_run_dir(tmp_path)
    with pytest.raises(ConfigError, match=f"in use by process {os.getpid()}"):
        lock_run_dir(tmp_path)
    held.close()
    lock_run_dir(tmp_path).close()  # free again once the holder is gone


def test_a_requeued_slurm_job_resumes_its_run(tmp_path, monkeypatch):
    overrides = tiny_mnist("mnist_mlp", "trainer.max_steps=2")
    train(compose("train", overrides), tmp_path)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(compose("train", tiny_mnist("mnist_mlp", "trainer.max_steps=4")), tmp_path)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    summary = train(compose("train", tiny_mnist("mnist_mlp", "trainer.max_steps=4")), tmp_path)
    assert summary["steps"] == 4 and [r["step"] for r in read_metrics(tmp_path)] == [2, 4]


def test_resume_drops_records_written_after_the_checkpoint(tmp_path):
    make_trainer(tmp_path, max_steps=2).fit()
    with (tmp_path / "metrics.jsonl").open("a") as f:  # as if the run died after logging more
        f.write(json.dumps({"epoch": 1, "step": 3}) + "\n")
    make_trainer(tmp_path, max_steps=4).fit(ckpt_path=tmp_path / "last.pt")
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4]


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2)
    with torch.no_grad():
        trainer.task.inp.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="loss is nan at step 1"):
        trainer.fit()


def test_bad_settings_and_devices_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="trainer.max_steps must be a positive integer"):
        make_trainer(tmp_path, max_steps=0)
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("experiment", [slow_when(e != "mnist_odenet", e, id=e)  # `make test-fast`: the ODE-Net
                                        for e in ("mnist_odenet", "mnist_rknet", "mnist_resnet", "mnist_mlp")])
def test_every_mnist_experiment_trains_two_steps(tmp_path, experiment):
    cfg = compose("train", tiny_mnist(experiment, "trainer.max_steps=2", "trainer.limit_eval_batches=1"))
    summary = train(cfg, tmp_path)

    records = read_metrics(tmp_path)
    assert len(records) == 1 and records[0]["step"] == 2
    record = records[0]
    assert torch.isfinite(torch.tensor(record["train_loss"])) and 0 <= record["test_error"] <= 1
    has_ode = experiment in ("mnist_odenet", "mnist_rknet")
    assert ("nfe_forward" in record) == has_ode and ("test_nfe_forward" in record) == has_ode
    if has_ode:
        assert record["nfe_forward"] > 0
        # ODE-Net's backward pass solves the adjoint ODE; RK-Net's goes through the solver's operations.
        assert (record["nfe_backward"] > 0) == (experiment == "mnist_odenet")
    tags = scalar_tags(tmp_path)
    assert {"train/loss", "test/error", "time/epoch_s", "memory/peak_mb"} <= tags
    assert ("nfe/forward" in tags) == has_ode
    assert summary["name"] == experiment and summary["num_parameters"] > 0
    stored = torch.load(tmp_path / "last.pt", weights_only=True)["config"]
    assert stored["name"] == experiment and stored["model"]["_target_"].endswith("ClassificationTask")


def test_the_adams_odenet_trains_two_steps_with_the_adjoint(tmp_path):
    """The paper's MNIST solver family (Section 3): implicit Adams, gradients by the adjoint."""
    cfg = compose("train", tiny_mnist("mnist_odenet", "solver=adams", "trainer.max_steps=2",
                                      "trainer.limit_eval_batches=1", "logger.tensorboard=false"))
    assert (cfg.solver.method, cfg.solver.gradient, cfg.solver.rtol) == ("adams", "adjoint", 1e-3)
    train(cfg, tmp_path)
    record = read_metrics(tmp_path)[-1]
    assert record["step"] == 2 and torch.isfinite(torch.tensor(record["train_loss"]))
    assert record["nfe_forward"] > 0 and record["nfe_backward"] > 0  # the backward pass solved the adjoint ODE


@pytest.mark.slow
def test_resume_true_continues_a_mnist_run_exactly(tmp_path):
    base = tiny_mnist("mnist_odenet", "trainer.limit_eval_batches=1", "logger.tensorboard=false")
    train(compose("train", [*base, "trainer.max_steps=4"]), tmp_path / "straight")
    train(compose("train", [*base, "trainer.max_steps=2"]), tmp_path / "resumed")
    train(compose("train", [*base, "trainer.max_steps=4", "resume=true"]), tmp_path / "resumed")

    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert reproducible(read_metrics(tmp_path / "resumed")[-1]) == reproducible(read_metrics(tmp_path / "straight")[-1])


def test_resume_without_a_checkpoint_says_which_run_dir_to_name(tmp_path):
    cfg = compose("train", tiny_mnist("mnist_mlp", "resume=true"))
    with pytest.raises(ConfigError, match="hydra.run.dir="):
        train(cfg, tmp_path)


def test_a_swapped_group_renames_the_run():
    from neuralode.train.cli import run_name

    assert run_name("mnist_odenet", ["experiment=mnist_odenet", "model=resnet"]) == "mnist_odenet-model_resnet"
    assert run_name("mnist_odenet", ["experiment=mnist_odenet", "solver=rk4", "seed=1"]) == "mnist_odenet-solver_rk4"
    assert run_name("mnist_odenet", ["experiment=mnist_odenet", "model.net.channels=16"]) is None
    assert run_name("mnist_odenet", ["model=resnet", "name=mine"]) is None


def test_a_renamed_run_resumes_under_its_name(tmp_path):
    """The name a swapped group gives is added before the resume check compares settings."""
    from neuralode.train.cli import _precheck_train

    args = [*tiny_mnist("mnist_mlp", "model=mlp", "trainer.max_steps=2"), f"hydra.run.dir={tmp_path}"]
    extra = _precheck_train(args)
    assert extra == ["name=mnist_mlp-model_mlp"]
    train(compose("train", [a for a in args if not a.startswith("hydra.")] + extra), tmp_path)
    assert _precheck_train(args + ["resume=true"]) == extra  # no "changed settings: name"
