"""Table 1 from run folders: synthetic runs in the trainer's formats give the exact markdown."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from neuralode.paper import table1
from neuralode.paper.runs import mnist_runs


def make_run(folder: Path, name: str, params: int, errors: list[float], epoch_times: list[float],
             steps_per_epoch: int, nfe: tuple[float, float] | None = None, saved_mb: float = 10.0,
             device: str = "cpu", extra_records_in_epoch: int = 0, solver: dict | None = None) -> Path:
    """A run folder as neuralode.train writes it: summary.json and metrics.jsonl (and the
    .hydra/config.yaml of its ``solver`` settings, when given)."""
    folder.mkdir(parents=True)
    if solver is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text(json.dumps({"solver": solver}))
    records = []
    for epoch, (error, seconds) in enumerate(zip(errors, epoch_times), start=1):
        for k in range(extra_records_in_epoch):  # mid-epoch evaluations: partial epoch times
            records.append({"epoch": epoch, "step": (epoch - 1) * steps_per_epoch + k + 1, "test_error": 0.99,
                            "epoch_time_s": 0.001, "peak_saved_tensors_mb": saved_mb / 2})
        record = {"epoch": epoch, "step": epoch * steps_per_epoch, "train_loss": 0.1, "test_error": error,
                  "epoch_time_s": seconds, "peak_saved_tensors_mb": saved_mb * epoch / len(errors)}
        if nfe is not None:
            record["nfe_forward"], record["nfe_backward"] = nfe[0] + epoch, nfe[1] + epoch
        if device.startswith("cuda"):
            record["cuda_max_allocated_mb"] = 100.0 * epoch
        records.append(record)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"name": name, "num_parameters": params, "device": device, "epochs": len(errors),
               "steps": len(errors) * steps_per_epoch, "final": records[-1]}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    make_run(root / "0_mnist_odenet", "mnist_odenet", 208_266, [0.5, 0.0042], [10.0, 12.0], 4, nfe=(24.0, 13.0),
             saved_mb=15.0, extra_records_in_epoch=1, solver={"method": "adams", "rtol": 1e-3, "gradient": "adjoint"})
    # The dopri5 variant: its error, far from ResNet's, must not decide the claims.
    make_run(root / "3_mnist_odenet_dopri5", "mnist_odenet_dopri5", 208_266, [0.5, 0.0099], [9.0, 9.0], 4,
             nfe=(20.0, 19.0), saved_mb=15.0, solver={"method": "dopri5", "rtol": 1e-3, "gradient": "adjoint"})
    make_run(root / "1_mnist_resnet", "mnist_resnet", 576_778, [0.3, 0.0041], [4.0, 5.0], 4, saved_mb=22.9)
    make_run(root / "2_mnist_rknet", "mnist_rknet", 208_266, [0.2, 0.0047], [8.0, 8.0], 4, nfe=(25.0, -1.0),
             saved_mb=77.3, device="cuda:0")
    return root


EXPECTED = """\
# Table 1: MNIST (scale: smoke)

| model | solver | epochs (steps) | test error | paper | params | paper | peak memory | paper | time / epoch | paper | NFE fwd | NFE bwd |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| MLP | - | no run | - | 1.60% | - | 0.24M | - | - | - | - | - | - |
| ResNet | - | 2 (8) | 0.41% | 0.41% | 0.58M | 0.60M | 22.9 MB saved | O(L) | 4.5 s (1125 ms/step) | O(L) | - | - |
| RK-Net | - | 2 (8) | 0.47% | 0.47% | 0.21M | 0.22M | 200 MB CUDA (77.3 MB saved) | O(L~) | 8.0 s (2000 ms/step) | O(L~) | 27.0 | 1.0 |
| ODE-Net | adams 0.001, adjoint | 2 (8) | 0.42% | 0.42% | 0.21M | 0.22M | 15.0 MB saved | O(1) | 11.0 s (2750 ms/step) | O(L~) | 26.0 | 15.0 |
| ODE-Net [dopri5] | dopri5 0.001, adjoint | 2 (8) | 0.99% | 0.42% | 0.21M | 0.22M | 15.0 MB saved | O(1) | 9.0 s (2250 ms/step) | O(L~) | 22.0 | 21.0 |

Training (the paper: all 60,000 training images, 160 epochs, lr x0.1 at epochs 60/100/140): ResNet 60,000 images x 2 epochs; RK-Net 60,000 images x 2 epochs; ODE-Net 60,000 images x 2 epochs; ODE-Net [dopri5] 60,000 images x 2 epochs. Test error on the 10,000 test images unless a run limited them.

| claim | ours | paper | verdict |
|---|---|---|---|
| ODE-Net's test error close to ResNet's | 0.42% vs 0.41% | 0.42% vs 0.41% | yes |
| ODE-Net has about a third of ResNet's parameters | 0.36x | 0.22M / 0.60M = 0.37x | yes |

Test error: the last evaluation of each run. Memory: peak bytes that a training step's forward pass saved for backward (and `torch.cuda.max_memory_allocated` on GPU); the paper gives the growth with depth L or NFE L~ (see memory.md for that measured). Time: training wall time per epoch (median), per optimiser step in brackets. NFE: function evaluations (field calls) per training step, forward and adjoint backward (mean over the last epoch); an Adams step makes two, a dopri5 step six. Solver: the paper's ODE-Net used the implicit Adams method of LSODE/VODE (Section 3), here the core's adaptive Adams-Bashforth-Moulton; a row marked [method] is a variant, left out of the claims. fig3.md solves the trained ODE-Net with scipy's LSODA as a cross-check.

Devices: cpu, cuda:0. Runs:

- ResNet: `1_mnist_resnet`
- RK-Net: `2_mnist_rknet`
- ODE-Net: `0_mnist_odenet`
- ODE-Net [dopri5]: `3_mnist_odenet_dopri5`
"""


def test_table_from_a_sweep_folder_is_exact(sweep: Path):
    runs = table1.find_runs([sweep])
    assert [run.label for run in runs] == ["ResNet", "RK-Net", "ODE-Net", "ODE-Net [dopri5]"]
    assert table1.render(runs, "smoke", base=sweep) == EXPECTED


def test_main_writes_markdown_and_csv(sweep: Path, tmp_path: Path, capsys):
    out = tmp_path / "paper"
    table1.main([str(sweep / "0_mnist_odenet"), str(sweep / "1_mnist_resnet"), "--out", str(out)])
    text = (out / "table1.md").read_text()
    assert text.startswith("# Table 1: MNIST (scale: custom (2 epochs))")  # inferred: not the full 160
    lines = list(csv.reader((out / "table1.csv").open()))
    assert lines[0][:5] == ["model", "solver", "params", "test_error", "epochs"]  # the columns anyone can check, first
    assert [line[0] for line in lines[1:]] == ["ResNet", "ODE-Net"]
    assert lines[2][:5] == ["ODE-Net", "adams 0.001, adjoint", "208266", "0.0042", "2"]  # raw fraction, not the percentage


@pytest.mark.parametrize("solver, model", [
    ("gradient: direct", "RK-Net"), ("gradient: adjoint", "ODE-Net"),
    ("adjoint: false", "RK-Net"), ("adjoint: true", "ODE-Net"),  # a run stored before solver.gradient
])
def test_run_identified_by_its_config_when_the_name_is_unknown(tmp_path: Path, solver: str, model: str):
    run = make_run(tmp_path / "custom", "my_experiment", 208_266, [0.1], [1.0], 2, nfe=(20.0, 10.0))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        f"model:\n  net:\n    _target_: neuralode.models.odenet.ODENet\nsolver:\n  {solver}\n")
    assert table1.load_run(run).model == model


def test_bad_folders_give_clear_errors(tmp_path: Path, sweep: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(table1.RunFolderError, match="no finished run"):
        table1.find_runs([empty])
    with pytest.raises(SystemExit, match="no finished run"):
        table1.main([str(empty), "--out", str(tmp_path / "paper")])
    other = make_run(tmp_path / "other", "spirals_latent_ode", 1000, [0.1], [1.0], 2)
    with pytest.raises(table1.RunFolderError, match="cannot tell which Table 1 model"):
        table1.load_run(other)
    # Inside a shared sweep folder, another family's run is skipped, not fatal.
    make_run(sweep / "4_spirals", "spirals_latent_ode", 1000, [0.1], [1.0], 2)
    assert len(table1.find_runs([sweep])) == 4


def test_table_subcommand_dispatches_to_the_builder(sweep: Path, tmp_path: Path, monkeypatch, capsys):
    from neuralode.paper import cli

    assert {"table1", "memory"} <= set(cli.available("table")) and "fig3" in cli.available("figure")
    monkeypatch.setattr("sys.argv", ["neuralode table", "table1", str(sweep), "--scale", "paper", "--out", str(tmp_path)])
    cli.table_cli()
    assert (tmp_path / "table1.md").read_text().startswith("# Table 1: MNIST (scale: paper)")
    monkeypatch.setattr("sys.argv", ["neuralode table", "table9"])
    with pytest.raises(SystemExit):
        cli.table_cli()
    assert "unknown table 'table9'" in capsys.readouterr().err


def test_runs_are_trained_costliest_first():
    # Two at a time, the ODE-Net then trains on one core while the others follow on the other.
    specs = mnist_runs("cpu")
    assert [s.experiment for s in specs] == ["mnist_odenet", "mnist_odenet_dopri5", "mnist_rknet", "mnist_resnet",
                                             "mnist_mlp"]
    assert all(s.run_dir.parent.name == "cpu" for s in specs)
    assert [s.experiment for s in mnist_runs("cpu", ["mnist_mlp", "mnist_odenet"])] == ["mnist_odenet", "mnist_mlp"]
