"""The memory-scaling proof: ODE-Net's saved bytes do not grow with solver steps, RK-Net's and
ResNet's do, and the sweep writes its table and plot."""

from __future__ import annotations

import pytest
import torch

from neuralode.paper import memory
from neuralode.train.memory import SavedTensorsMeter


def small_sweep(depths=(1, 2), tols=(1e-2,)):
    return memory.run_sweep(batch_size=2, channels=8, depths=depths, tols=tols, repeats=1,
                            device=torch.device("cpu"), log=lambda *a: None)


def by_setting(results, model, solver):
    return {m.setting: m for m in results if m.model == model and m.solver == solver}


def test_ode_net_memory_is_flat_and_rk_net_and_resnet_grow():
    results = small_sweep()
    ode = by_setting(results, "ODE-Net", "rk4")
    rk = by_setting(results, "RK-Net", "rk4")
    res = by_setting(results, "ResNet", "-")
    # rk4: 4 evaluations per step forward; the adjoint's backward solve takes the same steps.
    assert [ode["n=1"].nfe_forward, ode["n=2"].nfe_forward] == [4, 8]
    assert [ode["n=1"].nfe_backward, ode["n=2"].nfe_backward] == [4, 8]
    assert rk["n=2"].nfe_backward == 0  # RK-Net backpropagates through the solver instead
    assert ode["n=2"].saved_mb == ode["n=1"].saved_mb
    # Doubling the steps adds a full step's graph (4 evaluations of two convolutions each).
    assert rk["n=2"].saved_mb > 1.1 * rk["n=1"].saved_mb
    assert res["L=2"].saved_mb > res["L=1"].saved_mb
    # At equal steps the adjoint holds less than backprop through the solver.
    assert ode["n=1"].saved_mb < rk["n=1"].saved_mb


def test_live_meter_falls_back_after_backward():
    w = torch.randn(50, 50, requires_grad=True)
    meter = SavedTensorsMeter()
    with meter:
        loss = torch.tanh(torch.randn(20, 50) @ w).sum()
        assert meter.live_bytes > 0
        loss.backward()
    assert meter.live_bytes == 0 and meter.peak_bytes >= 20 * 50 * 4


def test_meter_counts_what_backward_still_needs_not_a_dropped_graph():
    """Table 1's column: a graph dropped inside the block (a rejected solver step, the first-step
    guess) stops counting when it is freed; one storage saved by two nodes counts once."""
    w = torch.randn(50, 50, requires_grad=True)
    meter = SavedTensorsMeter()
    with meter:
        dropped = torch.tanh(torch.randn(10, 50) @ w)  # saves its input (2 kB) and its output (2 kB)
        del dropped
        assert meter.live_bytes == 0
        h = torch.randn(40, 50) @ w  # saves its (40, 50) input for w's gradient: 8 kB
        loss = (torch.tanh(h) * torch.tanh(h)).sum()  # each tanh saves its output, which mul saves again
    assert meter.last_bytes == meter.peak_bytes == meter.live_bytes == 3 * 40 * 50 * 4
    loss.backward()
    assert meter.live_bytes == 0
    with meter:
        pass
    assert meter.last_bytes == 0 and meter.peak_bytes > 0


@pytest.mark.slow
def test_outputs_table_and_plot(tmp_path):
    results = small_sweep(depths=(1, 2), tols=(1e-1, 1e-2))
    paths = memory.write_outputs(results, tmp_path, "smoke", batch_size=2, channels=8, device=torch.device("cpu"))
    text = paths["md"].read_text()
    assert "(scale: smoke)" in text
    assert "| ODE-Net | dopri5 | tol=1e-02 |" in text
    # The claims: ODE-Net's memory is flat in depth (O(1)), ResNet's and RK-Net's grow.
    assert "| ODE-Net rk4: training-step memory constant in depth |" in text
    assert "| O(1) | yes |" in text and "| ResNet: training-step memory grows with depth |" in text
    ratios = memory.time_ratios(results)
    assert set(ratios) == {("rk4", "n=1"), ("rk4", "n=2"), ("dopri5", "tol=1e-01"), ("dopri5", "tol=1e-02")}
    assert all(r > 0 for r in ratios.values())
    assert len(paths["csv"].read_text().splitlines()) == 1 + len(results)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
