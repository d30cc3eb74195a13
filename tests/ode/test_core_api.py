"""odeint_dense, callbacks a method cannot call, and the core's import boundary."""

import subprocess
import sys

import pytest
import torch

from neuralode.ode import InvalidTimeError, count_host_reads, odeint, odeint_dense


@pytest.mark.parametrize("method, options", [("dopri5", None), ("bosh3", None), ("rk4", {"step_size": 0.1})])
def test_odeint_dense_matches_odeint_at_the_same_times(method, options):
    rot = lambda t, y: torch.stack([-y[1], y[0]])  # noqa: E731
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.33, 1.7, 2.0], dtype=torch.float64)
    dense = odeint_dense(rot, y0, t[0], t[-1], rtol=1e-8, atol=1e-8, method=method, options=options)
    ys = odeint(rot, y0, t, rtol=1e-8, atol=1e-8, method=method, options=options)
    torch.testing.assert_close(dense(t), ys, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense(t[2]), ys[2], rtol=1e-12, atol=1e-12)
    with pytest.raises(InvalidTimeError, match="outside the solved span"):
        dense(torch.tensor(2.5))


def test_odeint_dense_tuple_state_and_reversed_time():
    def f(t, state):
        a, b = state
        return -a, 2 * b

    dense = odeint_dense(f, (torch.ones(2, dtype=torch.float64), torch.ones(1, dtype=torch.float64)),
                         torch.tensor(1.0), torch.tensor(0.0), rtol=1e-10, atol=1e-10)
    a, b = dense(torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(a[:, 0], torch.exp(-(torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64) - 1)))
    torch.testing.assert_close(b[:, 0], torch.exp(2 * (torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64) - 1)))


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.accepted = 0

    def forward(self, t, y):
        return -y

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1


def test_a_callback_the_method_cannot_call_is_warned_about():
    func = Recorder()
    with pytest.warns(UserWarning, match="'rk4' does not call callback_accept_step"):
        odeint(func, torch.ones(1), torch.tensor([0.0, 1.0]), method="rk4", options={"step_size": 0.5})
    assert func.accepted == 0
    odeint(func, torch.ones(1), torch.tensor([0.0, 1.0]))
    assert func.accepted > 0


@pytest.mark.slow
def test_the_ode_core_imports_nothing_but_torch():
    code = ("import sys, neuralode.ode; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'neuralode', 'hydra', 'omegaconf', 'scipy', 'torchdiffeq', 'torchode', 'tensorboard'}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = eval(out)  # a printed list of module names
    assert all(m == "neuralode" or m.startswith("neuralode.ode") for m in loaded), loaded


def test_fixed_step_solve_reads_the_device_a_fixed_number_of_times():
    """On a GPU every read of a device value makes the host wait: a fixed-step solve reads the
    times, checks the initial state, and checks its outputs once at the end, however many steps
    and outputs it has."""
    field = torch.nn.Linear(2, 2)
    y0 = torch.randn(8, 2)
    counts = []
    for n_out, step in ((3, 0.1), (21, 0.1), (21, 0.01)):
        with torch.no_grad(), count_host_reads() as reads:
            odeint(lambda t, y: field(y), y0, torch.linspace(0, 1, n_out), method="rk4", options={"step_size": step})
        counts.append(reads.count)
    assert counts[0] == counts[1] == counts[2] <= 3, counts
