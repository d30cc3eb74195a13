"""Sweeps through Hydra's launchers: configs/hydra/launcher/joblib.yaml runs the jobs of a
multirun in parallel worker processes; submitit_slurm.yaml becomes the sbatch script of a job
array (checked without a cluster)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from neuralode.train.checkpoint import load_checkpoint
from neuralode.train.config import compose
from tests.blobs import tiny_mnist


@pytest.mark.slow
def test_joblib_launcher_runs_a_two_job_sweep_in_parallel_processes(tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "neuralode", "train", "-m", "hydra/launcher=joblib",
               *tiny_mnist("mnist_mlp", "trainer.max_steps=2"), "seed=0,1", f"hydra.sweep.dir={sweep}"]
    result = subprocess.run(command, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert "validated against ConfigStore schema" not in result.stderr  # the deliberate name match is quiet

    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [job.name for job in jobs] == ["0_mnist_mlp", "1_mnist_mlp"]
    states = [load_checkpoint(job / "last.pt") for job in jobs]
    assert [state["config"]["seed"] for state in states] == [0, 1]
    assert all((job / "summary.json").is_file() for job in jobs)
    first = states[0]["model"]
    assert any(not torch.equal(first[key], states[1]["model"][key]) for key in first)  # different seeds, different nets
    # Each job ran in a joblib worker of its own (the event file name ends with the writer's pid),
    # where Hydra's default launcher would have run both in the command's process.
    pids = {next(job.glob("events.out.tfevents.*")).name.split(".")[-2] for job in jobs}
    assert len(pids) == 2


# pytest resets warning filters per test; neuralode.train.config silences this one for real runs.
@pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/\w+' is validated against ConfigStore schema")
def test_submitit_slurm_config_becomes_a_gpu_job_array_script(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose("train", ["hydra/launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path}", "hydra.launcher.partition=gpu"],
                  return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("submitit_launcher.SlurmLauncher")

    # What the launcher does before submitting (submitit only checks that srun exists).
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in base_keys else f"slurm_{key}": value for key, value in params.items()})
    script = executor._executor._make_submission_file_text("python -m neuralode train", "uid")
    for line in ("--gpus-per-node=1", "--ntasks-per-node=1", "--partition=gpu", "--time=1440", "--cpus-per-task=8",
                 f"--output={tmp_path}/.submitit/%j/"):
        assert f"#SBATCH {line}" in script, line
