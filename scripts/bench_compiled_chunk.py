"""Probe for issue 31: does compiling whole chunks of attempted steps pay on this CPU?

Part 1, the chunk: a standalone dopri5 (the tiny 2-64-2 tanh field, batch 512, rtol = atol = 1e-5, t in [0, 1]) whose
``chunk`` runs K attempted steps with accept/reject as masks and every scalar a 0-dim tensor, so
that ``torch.compile(fullgraph=True)`` captures the field and the steps as one graph. It times the
same chunk eager and compiled (one thread). Not the package's solver: a measurement of what a
compiled solve path could gain.

Part 2, the kernels: the field alone, 20 evaluations chained in one function (so that a compiled
call's guards are paid once), eager ATen against inductor's generated C++ and, with the ``bench``
extra installed, JAX's ``jit``; and ``tanh`` on the hidden layer's (512, 64) by itself. Whatever a
compiled solve path saves in dispatch, it cannot beat the kernels it runs.

    python scripts/bench_compiled_chunk.py
"""

import time

import torch

torch.set_num_threads(1)
torch.manual_seed(0)
W1, b1 = torch.randn(64, 2) * 0.5, torch.randn(64) * 0.1
W2, b2 = torch.randn(2, 64) * 0.2, torch.randn(2) * 0.1


def f(y):
    return torch.tanh(y @ W1.T + b1) @ W2.T + b2


#: Dormand-Prince: the stages' coefficients and the error weights (5th minus 4th order).
A = [[], [1/5], [3/40, 9/40], [44/45, -56/15, 32/9], [19372/6561, -25360/2187, 64448/6561, -212/729],
     [9017/3168, -355/33, 46732/5247, 49/176, -5103/18656], [35/384, 0, 500/1113, 125/192, -2187/6784, 11/84]]
E = [71/57600, 0, -71/16695, 71/1920, -17253/339200, 22/525, -1/40]


def chunk(t, h, y, k1, t_end, K: int = 4):
    """K attempted dopri5 steps, accepted or rejected by masks; t, h stay 0-dim tensors."""
    for _ in range(K):
        hh = torch.minimum(h, t_end - t)
        ks = [k1]
        for i in range(1, 7):
            yi = y + hh * sum(a * kk for a, kk in zip(A[i], ks) if a != 0)
            ks.append(f(yi))
        y1 = yi
        err = hh * sum(e * kk for e, kk in zip(E, ks) if e != 0)
        scale = 1e-5 + 1e-5 * torch.maximum(y.abs(), y1.abs())
        ratio = (err / scale).square().mean().sqrt()
        ok = (ratio <= 1) & (t < t_end)
        t = torch.where(ok, t + hh, t)
        y, k1 = torch.where(ok, y1, y), torch.where(ok, ks[6], k1)
        fac = torch.clamp(0.9 * ratio.clamp_min(1e-10) ** (-0.2), 0.2, 10.0)
        h = torch.where(t < t_end, hh * fac, h)
    return t, h, y, k1


Y0 = torch.randn(512, 2)


def solve(step):
    t, h, t_end, y = torch.zeros(()), torch.tensor(0.05), torch.tensor(1.0), Y0
    k1, n = f(Y0), 0
    while True:
        t, h, y, k1 = step(t, h, y, k1, t_end)
        n += 1
        if bool(t >= t_end):
            return y, n


def chained(y, n: int = 20):
    for _ in range(n):
        y = y + 0.01 * f(y)
    return y


def per_call_us(fn, calls: int = 200) -> float:
    for _ in range(10):
        fn()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def kernels() -> None:
    hidden = torch.randn(512, 64)
    compiled_tanh = torch.compile(torch.tanh, dynamic=False)
    compiled_chain = torch.compile(chained, fullgraph=True, dynamic=False)
    print(f"tanh (512, 64): eager {per_call_us(lambda: torch.tanh(hidden), 1000):.1f} us, "
          f"compiled {per_call_us(lambda: compiled_tanh(hidden), 1000):.1f} us")
    line = (f"20 chained field evaluations: eager {per_call_us(lambda: chained(Y0)):.0f} us, "
            f"compiled {per_call_us(lambda: compiled_chain(Y0)):.0f} us")
    try:
        import os
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
        import jax
        import jax.numpy as jnp
    except ImportError:
        print(line + " (JAX not installed: pip install -e '.[bench]')")
        return
    w1, c1, w2, c2, y0 = (jnp.asarray(x.numpy()) for x in (W1.T.contiguous(), b1, W2.T.contiguous(), b2, Y0))

    def jax_chain(y):
        for _ in range(20):
            y = y + 0.01 * (jnp.tanh(y @ w1 + c1) @ w2 + c2)
        return y
    jitted = jax.jit(jax_chain)
    print(line + f", JAX jit {per_call_us(lambda: jitted(y0).block_until_ready()):.0f} us")


def main() -> None:
    with torch.no_grad():
        kernels()
        compiled = torch.compile(chunk, fullgraph=True, dynamic=False)
        for name, step in (("eager chunk", chunk), ("compiled chunk", compiled)):
            started = time.perf_counter()
            _, chunks = solve(step)
            first = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(50):
                solve(step)
            print(f"{name}: {(time.perf_counter() - started) / 50 * 1e3:.2f} ms per solve, {chunks} chunk(s), "
                  f"first call {first:.1f} s")


if __name__ == "__main__":
    main()
