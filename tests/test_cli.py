"""The command line end to end, in subprocesses: python -m neuralode train | eval."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from neuralode.train.loggers import read_metrics
from tests.blobs import tiny_mnist


def neuralode(*args: str, cwd) -> subprocess.CompletedProcess:
    # Run from a directory that is not the repository: configs/ must be found from the package.
    return subprocess.run([sys.executable, "-m", "neuralode", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_help_lists_the_subcommands(tmp_path):
    result = neuralode("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "train" in result.stdout and "eval" in result.stdout
    result = neuralode("trian", cwd=tmp_path)
    assert result.returncode != 0 and "unknown subcommand 'trian'" in result.stderr


@pytest.mark.slow
def test_train_then_eval_end_to_end(tmp_path):
    result = neuralode("train", *tiny_mnist("mnist_odenet", "trainer.max_steps=2"), f"paths.output_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "mnist_odenet").iterdir()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6}", run_dir.name)
    for name in (".hydra/config.yaml", "metrics.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    record = read_metrics(run_dir)[-1]
    assert record["step"] == 2 and record["nfe_forward"] > 0
    assert "parameters" in result.stdout + result.stderr  # the parameter count is printed at start

    result = neuralode("eval", f"ckpt={run_dir}", "device=cpu", f"paths.output_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout[result.stdout.index("{"):])
    assert metrics["step"] == 2 and metrics["test_error"] == pytest.approx(record["test_error"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_epoch=1", "did you mean 'trainer.max_epochs'"),
        ("solver.rtol=abc", "solver.rtol"),
        ("solver.adjoint=false", "'solver.adjoint=true/false' is now 'solver.gradient=adjoint/direct'"),
        ("experiment=nope", "experiment='nope' is not an option of the experiment group"),
    ],
)
@pytest.mark.slow
def test_bad_override_exits_non_zero_naming_the_problem(tmp_path, override, message):
    result = neuralode("train", override, f"paths.output_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mnist_odenet").exists()
