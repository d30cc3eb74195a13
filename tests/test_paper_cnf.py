"""Figures 4, 5 and the FFJORD toys: tables from run folders, figures from real flows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralode.models.cnf import CNF, PlanarField
from neuralode.models.planar_nf import PlanarFlow
from neuralode.paper import common, ffjord2d, fig4, fig5

PNG = b"\x89PNG"


def fake_run(path: Path, steps: int, **final) -> None:
    """A finished run folder as the trainer leaves it (summary.json, metrics.jsonl), no checkpoint."""
    path.mkdir(parents=True)
    records = [{"epoch": 1, "step": steps // 2, **{k: 2 * v for k, v in final.items()}},
               {"epoch": 2, "step": steps, **final}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "summary.json").write_text(json.dumps({"steps": steps, "device": "cpu", "elapsed_s": 1.0,
                                                   "num_parameters": 10, "final": records[-1]}))


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- Figure 4
def test_fig4_trains_the_costliest_runs_first_in_whole_pairs(tmp_path):
    specs = fig4.run_specs(tmp_path, ["u1", "u2"], [2, 32, 8])
    names = [spec.run_dir.name for spec in specs]
    assert names[:4] == ["cnf_density_matching_u1_32", "nf_density_matching_u1_32",
                         "cnf_density_matching_u2_32", "nf_density_matching_u2_32"]
    assert names[-2:] == ["cnf_density_matching_u2_2", "nf_density_matching_u2_2"]
    assert specs[1].overrides == ("data.energy=u1", "model.flow.layers=32")
    assert specs[0].overrides == ("data.energy=u1", "model.flow.field.units=32")


def test_fig4_table_says_where_the_cnf_is_lower(tmp_path):
    kl = {("NF", "u1", 2): 0.9, ("CNF", "u1", 2): 0.4,   # CNF lower
          ("NF", "u1", 8): 0.3, ("CNF", "u1", 8): 0.5,   # CNF higher
          ("NF", "u2", 2): 1.2}                          # CNF run missing
    for (flow, energy, size), value in kl.items():
        fake_run(fig4.run_dir(tmp_path, flow, energy, size), steps=100 if flow == "CNF" else 500,
                 test_kl=value, **({"nfe_forward": 26.0, "nfe_backward": 40.0} if flow == "CNF" else {}))
    runs = fig4.collect(tmp_path, ["u1", "u2"], [2, 8])
    assert runs[("CNF", "u2", 2)] is None and runs[("NF", "u2", 8)] is None

    rows = fig4.table_rows(runs, ["u1", "u2"], [2, 8])
    assert [row[-1] for row in rows] == ["yes", "no", "-", "-"]
    assert rows[0][2:4] == ["0.900 (500 it)", "0.400 (100 it)"]
    text = fig4.render(runs, "smoke", ["u1", "u2"], [2, 8])
    assert "(scale: smoke)" in text and "CNF below NF at **1 of 2**" in text
    assert "forward 26.0, adjoint backward 40.0" in text

    common.write_csv(tmp_path / "fig4.csv", fig4.CSV_HEADERS, fig4.csv_rows(runs))
    rows = read_csv(tmp_path / "fig4.csv")
    assert list(rows[0])[:4] == ["energy", "k", "nf_kl", "cnf_kl"]
    by_key = {(r["energy"], r["k"]): r for r in rows}
    assert sorted(by_key) == [("u1", "2"), ("u1", "8"), ("u2", "2"), ("u2", "8")]
    assert (float(by_key[("u1", "8")]["nf_kl"]), float(by_key[("u1", "8")]["cnf_kl"])) == (0.3, 0.5)
    assert by_key[("u2", "2")]["nf_kl"] == "1.2" and by_key[("u2", "2")]["cnf_kl"] == ""


def test_fig4_draws_from_run_folders_without_training(tmp_path):
    # Finished runs without checkpoints: the table is complete, the density panels say "no run".
    for flow in fig4.FLOWS:
        fake_run(fig4.run_dir(tmp_path / "runs", flow, "u2", 2), steps=10, test_kl=1.0 if flow == "NF" else 0.5)
    fig4.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-train", "--energies", "u2",
               "--sizes", "2", "--grid", "8", "--no-tensorboard"])
    assert (tmp_path / "out" / "fig4.png").read_bytes()[:4] == PNG
    assert "| U2 | 2 | 1.000 (10 it) | 0.500 (10 it) | yes |" in (tmp_path / "out" / "fig4.md").read_text()
    assert "Peak resident memory: training runs at most -, this drawing" in (tmp_path / "out" / "fig4.md").read_text()


@pytest.mark.slow
def test_fig4_trains_then_draws_real_densities(tmp_path):
    tiny = ["data.steps_per_epoch=2", "data.batch_size=16", "data.eval_samples=16", "data.eval_batch_size=16",
            "model.grid_size=8", "model.plot_samples=16", "logger.tensorboard=false", "trainer.progress_bar=false",
            "solver.method=rk4", "+solver.options.step_size=0.5"]
    argv = ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--energies", "u1", "--sizes", "2",
            "--grid", "12", "--device", "cpu"] + [arg for override in tiny for arg in ("--set", override)]
    fig4.main(argv)
    runs = fig4.collect(tmp_path / "runs", ["u1"], [2])
    assert all(run is not None and run.steps == 2 for run in runs.values())
    densities = fig4.model_densities(runs, fig4.HALF_WIDTH, 12)
    for density in densities.values():
        # A density of a flow close to N(0, I) (two steps from initialisation): mass about 1 on the grid.
        cell = (2 * fig4.HALF_WIDTH / 11) ** 2
        assert density.shape == (12, 12) and 0.8 < density.sum() * cell < 1.2
    assert (tmp_path / "out" / "fig4.png").read_bytes()[:4] == PNG
    assert (tmp_path / "out" / "tensorboard" / "fig4").is_dir()
    # A second call reuses the finished runs instead of training them again.
    before = (tmp_path / "runs" / "cnf_density_matching_u1_2" / "last.pt").stat().st_mtime_ns
    fig4.main(argv)
    assert (tmp_path / "runs" / "cnf_density_matching_u1_2" / "last.pt").stat().st_mtime_ns == before


def test_target_density_integrates_to_one():
    p = fig4.target_density("u3", half_width=6.0, grid=241)
    assert abs(p.sum() * (12.0 / 240) ** 2 - 1) < 0.02


# --------------------------------------------------------------------------- Figure 5
@pytest.mark.slow
def test_fig5_along_the_flow_and_figure(tmp_path):
    torch.manual_seed(0)
    solver = {"method": "rk4", "options": {"step_size": 0.25}}
    models = {"CNF": CNF(PlanarField(units=4, hidden=8), solver=solver).eval(),
              "NF": PlanarFlow(layers=5, direction="density", init_scale=0.5).eval()}
    drawn = {(flow, "two_moons"): fig5.along_the_flow(model, 4.0, 10, 50, fig5.FRACTIONS) for flow, model in models.items()}
    densities, points = drawn[("NF", "two_moons")]
    assert len(densities) == len(points) == len(fig5.FRACTIONS) and points[-1].shape == (50, 2)
    # The NF at 100% of its layers is the model itself: its samples are what it samples.
    z0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(points[-1], models["NF"].sample_with_log_prob(z0)[0].detach().numpy(), atol=1e-5)
    data = {"two_circles": np.random.default_rng(0).normal(size=(50, 2)), "two_moons": np.zeros((50, 2))}
    fig = fig5.make_figure(drawn, data, fig5.FRACTIONS, 4.0, "test")
    assert len(fig.axes) == 8 * 7  # per data set: CNF and NF, density and samples; fractions + data
    path = common.save_figure(fig, tmp_path, "fig5", tensorboard=False, dpi=110)
    assert path.read_bytes()[:4] == PNG


def test_fig5_trains_each_of_its_four_runs_once(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(fig5, "train_runs", lambda specs, args: trained.extend(specs) or [])
    with pytest.raises(SystemExit):  # the fake training leaves no run to draw
        fig5.main(["--scale", "smoke", "--runs", str(tmp_path), "--out", str(tmp_path)])
    assert trained[0].run_dir.name == "cnf_two_circles"  # the costliest first
    assert sorted(s.run_dir.name for s in trained) == sorted(fig5.run_name(f, d) for f in fig5.FLOWS for d in fig5.DATASETS)
    for spec in trained:  # one experiment per flow, swept over the data set
        flow, dataset = spec.run_dir.name.split("_", 1)
        assert spec.experiment == f"{flow}_toy2d" and spec.overrides == (f"data.name={dataset}",)


def test_fig5_cpu_trains_two_circles_cnf_for_2000_iterations(tmp_path):
    specs = {s.run_dir.name: s for s in fig5.run_specs(tmp_path, "cpu")}
    assert specs["cnf_two_circles"].overrides == ("data.name=two_circles", "trainer.max_epochs=2", "trainer.max_steps=2000")
    assert specs["cnf_two_moons"].overrides == ("data.name=two_moons",)


def test_fig5_and_ffjord_tables_from_run_folders(tmp_path):
    fake_run(tmp_path / "fig5" / "cnf_two_moons", steps=200, test_nll=2.6, nfe_forward=22.7, nfe_backward=21.4)
    fake_run(tmp_path / "fig5" / "nf_two_moons", steps=500, test_nll=2.5)
    text = fig5.render(fig5.collect(tmp_path / "fig5"), "smoke")
    assert "| Two Moons | CNF | 2.600 | 200 | 10 | 22.7 / 21.4 |" in text
    assert "| Two Moons | NF | 2.500 | 500 | 10 | - |" in text and "| Two Circles | CNF | no run |" in text

    fake_run(tmp_path / "ffjord" / "pinwheel", steps=300, test_nll=3.1, nfe_forward=22.0, nfe_backward=21.7,
             test_nfe_forward=32.0)
    runs = ffjord2d.collect(tmp_path / "ffjord", ["pinwheel", "rings"])
    text = ffjord2d.render(runs, "smoke")
    assert "| pinwheel | 3.100 | 300 | 22.0 | 21.7 | 32 | 70-100 |" in text and "| rings | no run |" in text
    fig = ffjord2d.make_figure({"pinwheel": (np.ones((6, 6)), np.zeros((10, 2)))},
                               {toy: np.zeros((10, 2)) for toy in runs}, runs, 4.0, "test")
    assert common.save_figure(fig, tmp_path, "ffjord2d", tensorboard=False, dpi=110).read_bytes()[:4] == PNG
