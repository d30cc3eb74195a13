"""Figures 1-3 from real solves: what they draw is what the solver did."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from neuralode.paper import fig1, fig2, fig3


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- Figure 2
def test_fig2_adjoint_record_is_the_solvers_own():
    solve = fig2.solve_with_adjoint(n_obs=3, t_end=3.0, tol=1e-6)
    # One record per evaluation of f, forward and backward.
    assert len(solve.forward_evals) == solve.nfe_forward
    assert len(solve.backward_evals) == solve.nfe_backward
    segments = fig2.split_segments(solve)
    assert len(segments) == 3
    # Each segment starts where the previous ended, moved by dL/dz(t_i) = z(t_i) - x_i.
    for i in range(1, 3):
        end, start = segments[i - 1][-1], segments[i][0]
        assert start[0] == pytest.approx(end[0]) == pytest.approx(float(solve.t_obs[-1 - i]))
        torch.testing.assert_close(start[2] - end[2], solve.jumps[-1 - i])
    # The last segment starts from dL/dz(t_N); the last evaluation at t = 0 holds autograd's dL/dz(0).
    torch.testing.assert_close(segments[0][0][2], solve.jumps[-1])
    assert solve.backward_evals[-1][0] == pytest.approx(0.0)
    torch.testing.assert_close(solve.backward_evals[-1][2], solve.y0_grad)


def test_fig2_outputs(tmp_path: Path):
    fig2.main(["--out", str(tmp_path), "--observations", "2", "--tol", "1e-3"])
    rows = read_csv(tmp_path / "fig2.csv")
    assert {r["solve"] for r in rows} == {"forward", "adjoint"}
    assert {r["segment"] for r in rows if r["solve"] == "adjoint"} == {"0", "1"}
    assert (tmp_path / "fig2.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- Figure 1
@pytest.mark.slow
def test_fig1_trains_both_models_and_records_the_solvers_evaluations(tmp_path: Path):
    untrained = fig1.build(steps=0, num_blocks=3, n_inputs=4)
    data = fig1.build(steps=30, num_blocks=3, n_inputs=4)
    assert data.resnet_mse < untrained.resnet_mse and data.ode_mse < untrained.ode_mse
    assert data.resnet_hs.shape == (4, 4)  # input + 3 blocks, 4 inputs
    assert len(data.ode_evals) == data.nfe > 0
    assert all(0.0 <= t <= 1.0 for t, _ in data.ode_evals)
    torch.testing.assert_close(data.ode_hs[0], data.inputs)
    paths = fig1.write_outputs(data, tmp_path)
    rows = read_csv(paths["csv"])
    assert sum(r["model"] == "odenet_evaluation" for r in rows) == 4 * data.nfe
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- Figure 3
def train_two_steps(run_dir: Path, experiment: str) -> Path:
    """An ODE-Net (8 channels) trained 2 steps on synthetic digits, evaluated after each step."""
    from neuralode.train.config import compose
    from neuralode.train.run import train

    cfg = compose("train", [
        f"experiment={experiment}", "model.net.channels=8", "data.synthetic=true", "data.synthetic_train_size=32",
        "data.synthetic_eval_size=16", "data.batch_size=8", "data.eval_batch_size=16", "trainer.max_steps=2",
        "trainer.eval_every_n_steps=1", "trainer.progress_bar=false", "logger.tensorboard=false",
    ])
    train(cfg, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory) -> Path:
    return train_two_steps(tmp_path_factory.mktemp("odenet_run"), "mnist_odenet")  # the paper's adams


@pytest.fixture(scope="module")
def two_step_dopri5_run(tmp_path_factory) -> Path:
    return train_two_steps(tmp_path_factory.mktemp("odenet_dopri5_run"), "mnist_odenet_dopri5")


@pytest.mark.slow
def test_fig3_from_a_two_step_checkpoint(two_step_run: Path, two_step_dopri5_run: Path, tmp_path: Path, capsys):
    fig3.main([str(two_step_run), "--variant", str(two_step_dopri5_run), "--out", str(tmp_path), "--images", "4",
               "--test-images", "16"])
    stages = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[fig3 ")]
    assert len(stages) >= 5 and "(a) and (b)" in stages[1], stages  # a line a stage while it measures
    assert (tmp_path / "fig3.png").read_bytes()[:4] == b"\x89PNG"
    assert list((tmp_path / "tensorboard" / "fig3").glob("events.out.tfevents.*"))
    rows = read_csv(tmp_path / "fig3.csv")
    sweep = [r for r in rows if r["panel"] == "a_b"]
    training = [r for r in rows if r["panel"] == "c_d"]
    # (a), (b): one point per tolerance; tighter tolerances cost more evaluations, err less.
    assert [float(r["tol"]) for r in sweep] == list(fig3.TOLERANCES)
    nfe = [int(r["nfe_forward"]) for r in sweep]
    assert nfe == sorted(nfe) and nfe[-1] > nfe[0]
    assert float(sweep[-1]["error"]) < float(sweep[0]["error"])
    assert all(float(r["forward_ms"]) > 0 for r in sweep)
    # (c), (d): one point per evaluation of each run (after step 1 and step 2), from metrics.jsonl,
    # the paper's adams run first, then the dopri5 run drawn beside it.
    assert [(r["run"], int(r["step"])) for r in training] == [
        ("adams 0.001", 1), ("adams 0.001", 2), ("dopri5 0.001", 1), ("dopri5 0.001", 2)]
    assert all(float(r["nfe_forward"]) > 0 and float(r["nfe_backward"]) > 0 for r in training)
    # One adjoint step of the trained model by each solver, the per-image forward cross-check with
    # scipy's LSODA beside adams, then the variant by its own solver.
    steps = [r for r in rows if r["panel"] == "c_step"]
    assert [(r["run"], r["solver"]) for r in steps] == [
        ("adams 0.001", "adams"), ("adams 0.001", "dopri5"), ("adams 0.001", "adams, one image a solve"),
        ("adams 0.001", "LSODA (scipy), one image a solve"), ("dopri5 0.001", "dopri5")]
    assert all(0 <= float(r["error"]) <= 1 and float(r["nfe_forward"]) > 0 for r in steps)
    assert all(int(r["nfe_backward"]) > 0 for r in steps if "one image" not in r["solver"])
    assert all(r["nfe_backward"] == "" for r in steps if "one image" in r["solver"])  # forward only
    adams = steps[0]
    for direction in ("forward", "backward"):  # one order per accepted step, starting at 1
        orders = adams[f"orders_{direction}"].split()
        assert len(orders) == int(adams[f"steps_{direction}"]) and orders[0] == "1"
    # An Adams step calls the field twice (predictor, corrector), plus the start: the calls add up.
    assert int(adams["nfe_forward"]) >= 2 * int(adams["steps_forward"])
    assert steps[1]["orders_forward"] == "" and steps[3]["steps_forward"] == ""  # dopri5: fixed order; scipy: its own steps
    # Beside (c): one adjoint step per error norm; the norm changes only the backward solve.
    norms = [r for r in rows if r["panel"] == "c_norm"]
    tolerances = sorted({float(r["tol"]) for r in norms}, reverse=True)
    assert tolerances == [1e-3, *fig3.NORM_TOLERANCES]  # the run's own, then tighter
    assert [r["adjoint_norm"] for r in norms] == list(fig3.ADJOINT_NORMS) * len(tolerances)
    for tol in tolerances:  # at one tolerance the forward solve is the same whatever the backward's norm
        assert len({r["nfe_forward"] for r in norms if float(r["tol"]) == tol}) == 1
    assert all(int(r["nfe_backward"]) > 0 for r in norms)


def test_fig3_rejects_a_model_without_an_ode_block(tmp_path: Path):
    from neuralode.train.config import compose
    from neuralode.train.run import train

    cfg = compose("train", [
        "experiment=mnist_mlp", "model.net.hidden=4", "data.synthetic=true", "data.synthetic_train_size=8",
        "data.synthetic_eval_size=8", "data.batch_size=8", "trainer.max_steps=1", "trainer.progress_bar=false",
        "logger.tensorboard=false",
    ])
    train(cfg, tmp_path / "mlp")
    with pytest.raises(SystemExit, match="not an ODE-Net"):
        fig3.main([str(tmp_path / "mlp"), "--out", str(tmp_path / "out")])


# --------------------------------------------------------------------------- REPORT.md
def test_report_includes_what_exists_and_names_what_is_missing(tmp_path: Path):
    from neuralode.paper import report

    (tmp_path / "table1.md").write_text("# Table 1: MNIST (scale: smoke)\n\n| model |\n|---|\n| ODE-Net |\n")
    (tmp_path / "fig2.png").write_bytes(b"\x89PNG")
    (tmp_path / "timings").mkdir()
    (tmp_path / "timings" / "table1-smoke.json").write_text(
        '{"target": "table1", "scale": "smoke", "start": 10.0, "end": 75.5, "status": "ok", "commit": "def5678", '
        '"runs_trained": 1, "runs_reused": 1}')
    # The runs it used: one trained at two commits (resumed), one from before runs recorded them,
    # one deleted since; listed from another checkout (itself under a folder named runs), so found
    # by their place under this folder's runs/.
    for name, summary in (("mlp", {"commits": ["0a1b2c3", "def5678"]}), ("resnet", {})):
        (tmp_path / "runs" / "smoke" / name).mkdir(parents=True)
        (tmp_path / "runs" / "smoke" / name / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "timings" / "table1-smoke.runs").write_text(
        "trained /runs/x/outputs/paper/runs/smoke/mlp\nreused /runs/x/outputs/paper/runs/smoke/resnet\n"
        "reused /runs/x/outputs/paper/runs/smoke/gone\n")
    (tmp_path / "timings" / "fig2.json").write_text(
        '{"target": "fig2", "scale": "smoke", "start": 10.0, "end": 12.0, "status": "ok"}')  # an older record
    text = report.render(tmp_path, "smoke", commit="abc1234", now="2026-01-01T00:00:00")
    assert "Scale: **smoke**" in text and "Written at commit `abc1234`" in text
    assert "| `make table1` | smoke | 66 s | 1 trained, 1 reused | ok | `def5678` | `0a1b2c3`, `def5678`, unknown, missing |" in text
    assert "| `make fig2` | smoke | 2 s | - | ok | - | - |" in text
    assert "### Table 1: MNIST (scale: smoke)\n\n| model |" in text  # included, heading demoted
    assert "![Figure 2: reverse-mode differentiation of an ODE solution](fig2.png)" in text
    assert "Not produced yet: `make fig3 SCALE=...`" in text
    assert "diagram of the model's computation graph" in text and "Nothing to reproduce" in text


@pytest.mark.slow
def test_report_gathers_every_claims_table_and_publishes_small_files(tmp_path: Path):
    import matplotlib.pyplot as plt
    import numpy as np

    from neuralode.paper import report
    from neuralode.paper.common import claims_table

    (tmp_path / "table2.md").write_text("# Table 2\n\n" + "".join(claims_table([
        ["n = 30: latent ODE below the RNN", "0.2 vs 0.4", "0.16 vs 0.39", "yes"]])) + "\nmore text\n")
    (tmp_path / "fig4.md").write_text("".join(claims_table([["CNF KL(q||p) below", "8 of 9", "9 of 9", "no"]])))
    (tmp_path / "fig4.csv").write_text("energy,k,nf_kl,cnf_kl\n")
    fig = plt.figure(figsize=(12, 12))
    fig.figimage(np.random.default_rng(0).random((1200, 1200, 3)))  # noise: a PNG far over 300 KB
    fig.savefig(tmp_path / "fig4.png", dpi=100)
    plt.close(fig)
    assert (tmp_path / "fig4.png").stat().st_size > report.MAX_PNG_BYTES
    text = report.render(tmp_path, "cpu", commit="abc1234", now="2026-01-01T00:00:00")
    assert "1 of 2 claims hold" in text
    assert "| `table2` | n = 30: latent ODE below the RNN | 0.2 vs 0.4 | 0.16 vs 0.39 | yes |" in text
    assert "| `fig4` | CNF KL(q||p) below | 8 of 9 | 9 of 9 | no |" in text
    assert "cores" in text  # the machine is named
    copied = report.publish(tmp_path, tmp_path / "published", "cpu")
    assert sorted(p.name for p in copied) == ["fig4.csv", "fig4.md", "fig4.png", "table2.md"]
    assert (tmp_path / "published" / "fig4.png").stat().st_size <= report.MAX_PNG_BYTES


def test_report_restores_from_a_published_folder_what_outputs_lack(tmp_path: Path):
    from neuralode.paper import report

    made, fresh, published = tmp_path / "made", tmp_path / "fresh", tmp_path / "published"
    (made / "timings").mkdir(parents=True)
    (made / "runs" / "cpu" / "mlp").mkdir(parents=True)
    (made / "runs" / "cpu" / "mlp" / "summary.json").write_text('{"commits": ["0a1b2c3"]}')
    (made / "timings" / "table1-cpu.json").write_text(
        '{"target": "table1", "scale": "cpu", "start": 0, "end": 60, "status": "ok", "commit": "def5678", '
        '"runs_trained": 1, "runs_reused": 0}')
    (made / "timings" / "table1-cpu.runs").write_text(f"trained {made}/runs/cpu/mlp\n")
    (made / "timings" / "fig2-cpu.json").write_text(
        '{"target": "fig2", "scale": "cpu", "start": 0, "end": 6, "status": "ok", "commit": "def5678", '
        '"runs_trained": 0, "runs_reused": 0}')
    (made / "table1.md").write_text("old table 1\n")
    (made / "table1.csv").write_text("model\n")
    (made / "fig2.md").write_text("old figure 2\n")
    copied = report.publish(made, published, "cpu")
    assert sorted(p.name for p in copied) == ["fig2.md", "table1.csv", "table1.md", "timings.json"]
    # A fresh checkout re-made Figure 2 only: it keeps its own, and takes the rest as published.
    # (Figure 2 re-made without a CSV keeps it that way: no published file joins a re-made artefact.)
    (published / "fig2.csv").write_text("stale\n")
    (fresh / "timings").mkdir(parents=True)
    (fresh / "fig2.md").write_text("new figure 2\n")
    (fresh / "timings" / "fig2-cpu.json").write_text(
        '{"target": "fig2", "scale": "cpu", "start": 0, "end": 7, "status": "ok", "commit": "9999999", '
        '"runs_trained": 0, "runs_reused": 0}')
    restored = report.restore(published, fresh, "cpu")
    assert sorted(p.name for p in restored) == ["table1-cpu.json", "table1.csv", "table1.md"]
    assert (fresh / "fig2.md").read_text() == "new figure 2\n"
    text = report.render(fresh, "cpu", commit="abc1234", now="2026-01-01T00:00:00")
    assert "| `make table1` | cpu | 60 s | 1 trained | ok | `def5678` | `0a1b2c3` |" in text
    assert "| `make fig2` | cpu | 7 s | none | ok | `9999999` | - |" in text
    assert "old table 1" in text and "new figure 2" in text
    assert not (fresh / "fig2.csv").exists()
    with pytest.raises(SystemExit, match="no such folder"):
        report.restore(tmp_path / "nowhere", fresh, "cpu")
    (published / "timings.json").write_text("{not json")
    with pytest.raises(SystemExit, match="timings.json is not valid JSON"):
        report.restore(published, tmp_path / "other", "cpu")
