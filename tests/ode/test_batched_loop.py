"""The loop on the device (``options={"per_sample": True}`` / ``{"sync_every": k}`` /
``{"compile": ...}``): per-sample step control, agreement with the host loop, host reads,
gradients, the compiled step, and bad input."""

import math

import pytest
import torch

from neuralode.ode import odeint
from neuralode.ode.errors import (
    InvalidOptionError,
    MaxStepsExceededError,
    NonFiniteStateError,
    StepSizeUnderflowError,
)
from neuralode.ode.stats import count_host_reads, last_stats

D = torch.float64


def van_der_pol(mu):
    def f(t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], -1)

    return f


def vdp_batch(n=16):
    mu = torch.linspace(0.1, 30.0, n, dtype=D)
    return van_der_pol(mu), torch.tensor([2.0, 0.0], dtype=D).expand(n, 2).clone()


class MLPField(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()

    def forward(self, t, y):
        return self.net(y)


def test_a_sample_solved_alone_equals_the_same_sample_in_a_batch():
    f, y0 = vdp_batch(16)
    t = torch.linspace(0, 6, 9, dtype=D)
    batch = odeint(f, y0, t, rtol=1e-6, atol=1e-6, options={"per_sample": True})
    mu = torch.linspace(0.1, 30.0, 16, dtype=D)
    for i in (0, 7, 15):
        alone = odeint(van_der_pol(mu[i:i + 1]), y0[i:i + 1], t, rtol=1e-6, atol=1e-6, options={"per_sample": True})
        torch.testing.assert_close(batch[:, i], alone[:, 0], rtol=0, atol=1e-12)
    # With a shared step, the stiffest sample sets everyone's steps, so a sample's result moves with its batch.
    shared = odeint(f, y0, t, rtol=1e-6, atol=1e-6)
    alone = odeint(van_der_pol(mu[:1]), y0[:1], t, rtol=1e-6, atol=1e-6)
    assert (shared[:, 0] - alone[:, 0]).abs().max() > 1e-9


@pytest.mark.parametrize("method, tol", [
    ("dopri5", 1e-8), ("tsit5", 1e-8), ("bosh3", 1e-7),
    pytest.param("fehlberg2", 1e-5, marks=pytest.mark.slow), pytest.param("adaptive_heun", 1e-5, marks=pytest.mark.slow),
])
def test_per_sample_solutions_meet_the_tolerance_at_every_output(method, tol):
    rates = torch.tensor([0.1, 1.0, 5.0, 20.0], dtype=D)
    y0 = torch.ones(4, 3, dtype=D)
    t = torch.linspace(0, 2, 13, dtype=D)  # more outputs than one step may hold
    ys = odeint(lambda t, y: -rates[:, None] * y, y0, t, method=method, rtol=tol, atol=tol / 100,
                options={"per_sample": True})
    exact = torch.exp(-rates[None, :, None] * t[:, None, None]).expand_as(ys)
    assert ys.shape == (13, 4, 3)
    assert (ys - exact).abs().max() < 1000 * tol


def test_per_sample_control_spends_fewer_evaluations_on_a_mixed_batch():
    f, y0 = vdp_batch(32)
    t = torch.linspace(0, 5, 3, dtype=D)
    odeint(f, y0, t, rtol=1e-6, atol=1e-6)
    shared = last_stats().nfe
    odeint(f, y0, t, rtol=1e-6, atol=1e-6, options={"per_sample": True})
    per_sample = last_stats().nfe_per_sample
    assert per_sample.shape == (32,)
    assert per_sample.double().mean() < 0.8 * shared
    assert per_sample[0] < per_sample[-1]  # mu = 0.1 needs far fewer steps than mu = 30


def test_func_receives_each_samples_own_time():
    seen = []
    rate = torch.tensor([0.0, 50.0, 50.0], dtype=D)[:, None]

    def f(t, y):
        seen.append(t.clone())
        return rate * torch.cos(rate * t[:, None]) * torch.ones_like(y)

    odeint(f, torch.zeros(3, 2, dtype=D), torch.tensor([0.0, 1.0], dtype=D), options={"per_sample": True})
    assert all(t.shape == (3,) for t in seen)
    # Sample 0 does not move, so it takes long steps and is done while the others still oscillate.
    assert any(bool(t[0] == 1.0) and bool(t[1] < 0.5) for t in seen)


@pytest.mark.parametrize("sync_every", [1, 3])
def test_the_batched_loop_on_one_row_takes_the_host_loops_steps(sync_every):
    func = MLPField()
    y0 = torch.randn(5, 2, dtype=D, generator=torch.Generator().manual_seed(1))
    t = torch.linspace(0, 2, 4, dtype=D)
    with torch.no_grad():
        host = odeint(func, y0, t, rtol=1e-7, atol=1e-9)
        host_steps = last_stats().n_accepted, last_stats().n_rejected
        device = odeint(func, y0, t, rtol=1e-7, atol=1e-9, options={"sync_every": sync_every})
        device_steps = last_stats().n_accepted, last_stats().n_rejected
    torch.testing.assert_close(device, host, rtol=0, atol=1e-13)
    assert device_steps == host_steps


def test_an_adaptive_solve_on_the_device_reads_the_host_once_every_k_attempts():
    f, y0 = vdp_batch(8)
    t = torch.linspace(0, 3, 4, dtype=D)
    with count_host_reads() as default_loop:
        odeint(f, y0, t, rtol=1e-6, atol=1e-6)
    attempts = last_stats().n_accepted + last_stats().n_rejected
    assert default_loop.count >= attempts  # the default loop reads the error norm at every attempt
    for k in (1, 4, 16):
        with count_host_reads() as reads:
            odeint(f, y0, t, rtol=1e-6, atol=1e-6, options={"sync_every": k})
        attempts = last_stats().n_accepted + last_stats().n_rejected
        # the initial check, one read per k attempts (plus the last, partly idle, round), and the counts
        assert reads.count <= 1 + math.ceil(attempts / k) + 1 + 1, (k, reads.count, attempts)
    with count_host_reads() as reads:
        odeint(f, y0, t, rtol=1e-6, atol=1e-6, options={"per_sample": True, "sync_every": 8})
    rounds = max(last_stats().nfe_per_sample).item() // 6 // 8 + 2
    assert reads.count <= 2 + rounds


@pytest.mark.parametrize("gradient", ["direct", "adjoint"])
def test_gradients_through_a_per_sample_solve(gradient):
    func = MLPField()
    y0 = torch.randn(4, 2, dtype=D, generator=torch.Generator().manual_seed(2), requires_grad=True)
    t = torch.linspace(0, 1.5, 5, dtype=D)

    def grads(options):
        func.zero_grad()
        y0.grad = None
        ys = odeint(func, y0, t, rtol=1e-10, atol=1e-10, options=options, gradient=gradient)
        ys.pow(2).sum().backward()
        return torch.cat([y0.grad.reshape(-1)] + [p.grad.reshape(-1) for p in func.parameters()])

    torch.testing.assert_close(grads({"per_sample": True}), grads(None), rtol=1e-6, atol=1e-7)


def test_a_per_sample_batch_gradient_is_the_sum_of_each_samples_gradient():
    func = MLPField()
    y0 = torch.randn(3, 2, dtype=D, generator=torch.Generator().manual_seed(3))
    t = torch.linspace(0, 1, 3, dtype=D)
    opts = {"per_sample": True}

    def grad(y):
        func.zero_grad()
        odeint(func, y, t, rtol=1e-6, atol=1e-6, options=opts)[-1].sum().backward()
        return torch.cat([p.grad.reshape(-1) for p in func.parameters()])

    total = sum(grad(y0[i:i + 1]) for i in range(3))
    torch.testing.assert_close(grad(y0), total, rtol=1e-10, atol=1e-12)


def test_decreasing_times_and_tuple_states():
    func = MLPField()
    y0 = torch.randn(3, 2, dtype=D, generator=torch.Generator().manual_seed(4))
    t = torch.linspace(2, 0, 4, dtype=D)
    with torch.no_grad():
        torch.testing.assert_close(odeint(func, y0, t, rtol=1e-9, atol=1e-9, options={"per_sample": True}),
                                   odeint(func, y0, t, rtol=1e-9, atol=1e-9), rtol=0, atol=1e-7)
    ts = torch.linspace(0, 2, 5, dtype=D)
    x, v = odeint(lambda t, y: (y[1], -y[0]), (torch.ones(3, dtype=D), torch.zeros(3, dtype=D)), ts,
                  rtol=1e-9, atol=1e-9, options={"sync_every": 2})
    torch.testing.assert_close(x, torch.cos(ts)[:, None].expand(5, 3), rtol=0, atol=1e-7)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="rk4", options={"per_sample": True}), "unknown option"),
    (dict(method="dopri8", options={"per_sample": True}), "not 'dopri8'"),
    (dict(method="adams", options={"sync_every": 2}), "not 'adams'"),
    (dict(options={"per_sample": "yes"}), "must be True or False"),
    (dict(options={"sync_every": 0}), "positive integer"),
    (dict(options={"compile": "yes"}), "option 'compile' must be True, False or a dict of torch.compile arguments"),
    (dict(method="rk4", options={"compile": True}), "unknown option"),
    (dict(options={"per_sample": True, "norm": lambda x: x.abs().max()}), "custom 'norm'"),
    (dict(options={"sync_every": 2, "step_t": [0.5]}), "'step_t' is not supported"),
    (dict(options={"per_sample": True}, gradient="checkpoint"), "gradient='checkpoint'"),
    (dict(options={"per_sample": True}, gradient="adjoint", adjoint_options={"per_sample": True}), "no batch rows"),
    (dict(gradient="adjoint", adjoint_options={"compile": True}), "adjoint_options 'compile' cannot apply"),
])
def test_bad_batched_loop_options_are_named(kwargs, message):
    with pytest.raises(InvalidOptionError, match=message):
        odeint(MLPField(), torch.zeros(2, 2, dtype=D), torch.tensor([0.0, 1.0], dtype=D), **kwargs)


def test_per_sample_needs_a_batched_tensor_state():
    with pytest.raises(InvalidOptionError, match="first dimension is the batch"):
        odeint(lambda t, y: (y[1], y[0]), (torch.ones(2), torch.ones(2)), torch.tensor([0.0, 1.0]),
               options={"per_sample": True})
    with pytest.raises(InvalidOptionError, match="event_fn"):
        odeint(lambda t, y: -y, torch.ones(2, 1), torch.tensor([0.0, 1.0]), options={"per_sample": True},
               event_fn=lambda t, y: y.sum() - 0.5)


def test_a_stalled_sample_is_named():
    y0 = torch.ones(3, 1, dtype=D)
    blow_up = lambda t, y: torch.cat([-y[:2], y[2:] ** 2])  # noqa: E731  sample 2: y = 1 / (1 - t)
    with pytest.raises(StepSizeUnderflowError, match="in sample 2"):
        odeint(blow_up, y0, torch.tensor([0.0, 2.0], dtype=D), options={"per_sample": True})
    nan_after = lambda t, y: torch.where(t[:, None] < 0.5, -y, torch.nan)  # noqa: E731
    with pytest.raises((NonFiniteStateError, StepSizeUnderflowError)):
        odeint(nan_after, y0, torch.tensor([0.0, 1.0], dtype=D), options={"per_sample": True})
    with pytest.raises(MaxStepsExceededError, match="max_num_steps=5"):
        odeint(*vdp_batch(4), torch.tensor([0.0, 10.0], dtype=D), options={"per_sample": True, "max_num_steps": 5})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_per_sample_on_cuda_equals_cpu():
    f, y0 = vdp_batch(8)
    t = torch.linspace(0, 3, 5, dtype=D)
    cpu = odeint(f, y0, t, rtol=1e-6, atol=1e-6, options={"per_sample": True})
    mu = torch.linspace(0.1, 30.0, 8, dtype=D, device="cuda")
    cuda = odeint(van_der_pol(mu), y0.cuda(), t.cuda(), rtol=1e-6, atol=1e-6, options={"per_sample": True})
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-9)


def test_the_adjoint_backward_on_the_batched_loop_takes_the_default_loops_steps():
    func = MLPField()
    y0 = torch.randn(4, 2, dtype=D, generator=torch.Generator().manual_seed(5), requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=D)
    grads, steps = [], []
    for options in (None, {"sync_every": 2}):
        func.zero_grad()
        odeint(func, y0, t, rtol=1e-8, atol=1e-8, gradient="adjoint", options=options).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in func.parameters()]))
        backward = last_stats(backward=True)
        steps.append((backward.n_accepted, backward.n_rejected))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    # Summed over the 4 backward segments, each warm-started from the step the last one proposed.
    assert steps[1] == steps[0]


# ``aot_eager`` traces and runs the same graphs as the default backend without generating C++;
# the default (inductor) compiles for a minute on 2 cores, so it is left to `make bench-ode`.
COMPILE = {"compile": {"backend": "aot_eager"}}


@pytest.mark.slow
def test_the_compiled_step_takes_the_same_steps_and_gradients_and_compiles_once():
    from torch._dynamo.utils import counters

    func = MLPField()
    t = torch.linspace(0, 2, 4, dtype=D)
    y0 = torch.randn(5, 2, dtype=D, generator=torch.Generator().manual_seed(1), requires_grad=True)
    eager = odeint(func, y0, t, rtol=1e-7, atol=1e-9, options={"sync_every": 1})
    eager_steps = last_stats().n_accepted, last_stats().n_rejected
    eager_grad, = torch.autograd.grad(eager.square().sum(), y0)
    compiled = odeint(func, y0, t, rtol=1e-7, atol=1e-9, options={"sync_every": 1, **COMPILE})
    assert (last_stats().n_accepted, last_stats().n_rejected) == eager_steps
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-12)
    compiled_grad, = torch.autograd.grad(compiled.square().sum(), y0)
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-10, atol=1e-12)
    # Later solves with new values (same func, shapes and settings) reuse the compiled graphs.
    graphs = counters["stats"]["unique_graphs"]
    for seed in (2, 3):
        y = torch.randn(5, 2, dtype=D, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        odeint(func, y, t, rtol=1e-7, atol=1e-9, options={"sync_every": 1, **COMPILE}).sum().backward()
    assert counters["stats"]["unique_graphs"] == graphs
    # With the adjoint, the forward solve compiles and the backward one (which calls
    # torch.autograd.grad inside its field) runs eagerly: the same gradient as without compile.
    adjoint_grads = []
    for options in ({"sync_every": 1}, {"sync_every": 1, **COMPILE}):
        func.zero_grad()
        odeint(func, y0, t, rtol=1e-7, atol=1e-9, gradient="adjoint", options=options).square().sum().backward()
        adjoint_grads.append(torch.cat([p.grad.reshape(-1) for p in func.parameters()]))
    torch.testing.assert_close(adjoint_grads[1], adjoint_grads[0], rtol=1e-10, atol=1e-12)
    # Per-sample steps compile too.
    f, y0 = vdp_batch(4)
    per_sample = odeint(f, y0, t, rtol=1e-6, atol=1e-6, options={"per_sample": True, **COMPILE})
    torch.testing.assert_close(per_sample, odeint(f, y0, t, rtol=1e-6, atol=1e-6, options={"per_sample": True}),
                               rtol=0, atol=1e-12)


@pytest.mark.slow
def test_a_func_that_breaks_the_graph_compiles_with_breaks_and_says_so():
    def reads_the_host(t, y):
        if float(y.abs().max()) > 1e6:  # a host read: Dynamo cannot keep it in one graph
            raise RuntimeError("blew up")
        return -y

    y0 = torch.ones(3, 2, dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    with pytest.warns(UserWarning, match="cannot be traced as one graph.*compiling it with graph breaks"):
        ys = odeint(reads_the_host, y0, t, rtol=1e-8, atol=1e-10, options=COMPILE)
    torch.testing.assert_close(ys[-1], y0 * math.exp(-1), rtol=1e-6, atol=0)


@pytest.mark.slow
def test_a_func_that_recompiles_every_call_falls_back_to_eager_and_says_so(monkeypatch):
    class Counting(torch.nn.Module):
        """A Python counter on the module: a guard of the compiled step that changes every call."""

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, t, y):
            self.calls += 1
            return -y

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    torch._dynamo.reset()
    func = Counting()
    y0 = torch.ones(3, 2, dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    with pytest.warns(UserWarning, match="recompiled torch._dynamo.config.recompile_limit=2 times.*runs eagerly"):
        ys = odeint(func, y0, t, rtol=1e-8, atol=1e-10, options=COMPILE)
    torch.testing.assert_close(ys, odeint(func, y0, t, rtol=1e-8, atol=1e-10, options={"sync_every": 1}),
                               rtol=0, atol=1e-12)

