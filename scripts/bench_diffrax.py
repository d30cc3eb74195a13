"""neuralode against diffrax's JIT-compiled solves on the small-state workloads (issue 31).

diffrax (JAX) compiles a whole solve into one XLA program; our solves dispatch every field call
and solver operation eagerly. This measures the gap on the three small-state workloads of
``scripts/bench_ode.py`` with the same weights, initial states and loss in both libraries:

- the tiny 2-64-2 tanh field, batch 512, dopri5 at 1e-5, t in [0, 1];
- the latent ODE's dynamics (4-20-20-4 ELU), batch 100, 100 output times over [0, 3], dopri5 at 1e-3;
- FFJORD's 2-D field (3-64-64-64-2 tanh on (z, t), Hutchinson's trace with fixed noise), batch 100,
  dopri5 at 1e-5, t in [0, 0.5].

For each: the forward solve (no gradient) and a training step (forward and the gradient of
<y(t_1..t_n), cotangent> with respect to the field's parameters): ours eager and with
``options={"compile": True}``, torchdiffeq, and diffrax under ``jax.jit`` with its default
``RecursiveCheckpointAdjoint`` and with ``DirectAdjoint``. One thread for both libraries,
interleaved rounds, median. The first call of each compiled variant is timed apart (its compile
cost, once per shape). Writes ``outputs/bench/diffrax.md``.

    python scripts/bench_diffrax.py [--problems tiny latent ffjord] [--repeats 7]

Needs the ``bench`` extra (``jax[cpu]``, ``diffrax``); the package itself never imports JAX.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# One thread for XLA too, set before JAX is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ode import PROBLEMS, Counted, FFJORDField, Problem, TinyField, interleaved_medians, latent_field, times_for  # noqa: E402

from neuralode.ode import collect_stats, odeint  # noqa: E402

try:
    import diffrax
    import jax
    import jax.numpy as jnp
except ImportError:  # the bench extra is not installed
    diffrax = None

try:
    import torchdiffeq
except ImportError:
    torchdiffeq = None

WORKLOADS = {"tiny": TinyField, "latent": latent_field, "ffjord": FFJORDField}


# --------------------------------------------------------------------------- the fields in JAX
def jax_layers(net: nn.Sequential) -> list[tuple]:
    """The torch MLP as data: ("linear", W, b) and ("tanh",) / ("elu",) steps, weights as JAX arrays."""
    layers = []
    for module in net:
        if isinstance(module, nn.Linear):
            layers.append(("linear", jnp.asarray(module.weight.detach().numpy()), jnp.asarray(module.bias.detach().numpy())))
        elif isinstance(module, nn.Tanh):
            layers.append(("tanh",))
        elif isinstance(module, nn.ELU):
            layers.append(("elu",))
        else:
            raise TypeError(f"no JAX version of {type(module).__name__}")
    return layers


def split(layers: list[tuple]) -> tuple[list, list[str]]:
    """The trainable arrays (what the gradient is taken of) and the layer kinds."""
    params = [(w, b) for kind, *wb in layers if kind == "linear" for w, b in [wb]]
    return params, [layer[0] for layer in layers]


def mlp(params, kinds, x):
    weights = iter(params)
    for kind in kinds:
        if kind == "linear":
            w, b = next(weights)
            x = x @ w.T + b
        elif kind == "tanh":
            x = jnp.tanh(x)
        else:
            x = jax.nn.elu(x)
    return x


def jax_field(torch_field: nn.Module):
    """``(f(t, y, params), params)``: the same vector field as ``torch_field``, in JAX."""
    if isinstance(torch_field, FFJORDField):
        params, kinds = split(jax_layers(torch_field.net))
        noise = jnp.asarray(torch_field.noise.numpy())

        def ffjord(t, state, params):
            z = state[:, :2]

            def g(z):
                return mlp(params, kinds, jnp.concatenate([z, jnp.full((z.shape[0], 1), t, z.dtype)], 1))

            dz, jv = jax.jvp(g, (z,), (noise,))  # J e, row by row: each row depends on its own z only
            return jnp.concatenate([dz, -(noise * jv).sum(1, keepdims=True)], 1)
        return ffjord, params
    params, kinds = split(jax_layers(torch_field.net))
    return (lambda t, y, params: mlp(params, kinds, y)), params


def diffrax_solvers(f, p: Problem, ts, adjoint):
    """Jitted forward and training step of diffrax's Dopri5 with a PID controller at ``p``'s tolerances."""
    term = diffrax.ODETerm(f)

    def solve(params, y0):
        solution = diffrax.diffeqsolve(term, diffrax.Dopri5(), ts[0], ts[-1], None, y0, params,
                                       saveat=diffrax.SaveAt(ts=ts),
                                       stepsize_controller=diffrax.PIDController(rtol=p.rtol, atol=p.atol),
                                       adjoint=adjoint, max_steps=4096)
        return solution.ys, solution.stats["num_steps"]

    forward = jax.jit(solve)

    @jax.jit
    def step(params, y0, cotangent):
        def loss(params):
            ys, _ = solve(params, y0)
            return (ys * cotangent).sum()
        return jax.value_and_grad(loss)(params)

    return forward, step


def block(tree):
    return jax.tree_util.tree_map(lambda x: x.block_until_ready(), tree)


# --------------------------------------------------------------------------- one workload
def bench(p: Problem, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    field_ = p.make_field()
    y0 = torch.randn(p.state_shape)
    cotangent = torch.randn((p.n_times, *p.state_shape))
    ts = times_for(y0, p)
    counted = Counted(field_)
    params = list(field_.parameters())
    rows: list[dict] = []

    def ours(options):
        # The field itself, not Counted: a Python counter on the module would be a guard that
        # changes every call, and the compiled step would recompile each solve. NFE come from
        # collect_stats instead.
        kwargs = dict(method=p.method, rtol=p.rtol, atol=p.atol, options=options)

        def forward():
            with torch.no_grad():
                return odeint(field_, y0, ts, **kwargs)

        def step():
            for q in params:
                q.grad = None
            out = odeint(field_, y0, ts, **kwargs)
            (out * cotangent).sum().backward()
            return out
        return forward, step

    def torchdiffeq_runs():
        def forward():
            with torch.no_grad():
                return torchdiffeq.odeint(counted, y0, ts, method=p.method, rtol=p.rtol, atol=p.atol)

        def step():
            for q in params:
                q.grad = None
            out = torchdiffeq.odeint(counted, y0, ts, method=p.method, rtol=p.rtol, atol=p.atol)
            (out * cotangent).sum().backward()
            return out
        return forward, step

    variants = {"neuralode eager": ours(None), "neuralode compiled": ours({"compile": True})}
    if torchdiffeq is not None:
        variants["torchdiffeq"] = torchdiffeq_runs()
    reference = None
    if diffrax is not None:
        f, jparams = jax_field(field_)
        jy0, jts, jcot = jnp.asarray(y0.numpy()), jnp.asarray(ts.numpy()), jnp.asarray(cotangent.numpy())
        for name, adjoint in (("diffrax jit", diffrax.RecursiveCheckpointAdjoint()),
                              ("diffrax jit, DirectAdjoint", diffrax.DirectAdjoint())):
            jforward, jstep = diffrax_solvers(f, p, jts, adjoint)
            variants[name] = (lambda jforward=jforward: block(jforward(jparams, jy0)),
                              lambda jstep=jstep: block(jstep(jparams, jy0, jcot)))

    for mode, index in (("forward", 0), ("training step", 1)):
        runs, first = {}, {}
        for name, fns in variants.items():
            counted.calls = 0
            started = time.perf_counter()
            with collect_stats() as stats:
                out = fns[index]()  # the first call: compiles, where a variant compiles
            first[name] = time.perf_counter() - started
            row = {"workload": p.name, "mode": mode, "library": name, "first_s": first[name]}
            if name.startswith("diffrax"):
                ys, steps = out if mode == "forward" else (None, None)
                row["steps"] = int(steps) if steps is not None else None
                solution = None if ys is None else torch.from_numpy(jax.device_get(ys).copy())
            else:
                row["nfe"] = stats.nfe_forward if name.startswith("neuralode") else counted.calls
                solution = out.detach()
            if mode == "forward" and solution is not None:
                reference = solution if reference is None else reference
                row["diff"] = float((solution - reference).abs().max())
            rows.append(row)
            runs[name] = fns[index]
        medians, rounds = interleaved_medians(runs, torch.device("cpu"), repeats, warmup=1, min_seconds=1.0,
                                              max_seconds=30.0)
        for row in rows:
            if row["mode"] == mode and row["library"] in medians:
                row["seconds"], row["rounds"] = medians[row["library"]], rounds
                print(f"  {p.name[:28]:28s} {mode:14s} {row['library']:28s} {1e3 * row['seconds']:8.2f} ms "
                      f"(first call {row['first_s']:.2f} s)", flush=True)
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| workload | run | library | time [ms] | vs diffrax jit | NFE (ours) / steps (diffrax) | first call [s] | max diff vs ours |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        peer = next((r for r in rows if r["workload"] == row["workload"] and r["mode"] == row["mode"]
                     and r["library"] == "diffrax jit" and "seconds" in r), None)
        ratio = f"{row['seconds'] / peer['seconds']:.2f}x" if peer and "seconds" in row else "-"
        count = row.get("nfe", row.get("steps"))
        count = "-" if count is None else (f"{count} steps" if "steps" in row else str(count))
        diff = f"{row['diff']:.1e}" if "diff" in row else "-"
        lines.append(f"| {row['workload']} | {row['mode']} | {row['library']} | {1e3 * row.get('seconds', float('nan')):.2f} "
                     f"| {ratio} | {count} | {row['first_s']:.2f} | {diff} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (more for fast solves, to fill 1 s)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/diffrax.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if diffrax is None:
        print("diffrax is not installed (pip install -e '.[bench]'): timing the PyTorch libraries alone", file=sys.stderr)
    rows: list[dict] = []
    for name in args.problems:
        problem = next(p for p in PROBLEMS if p.make_field is WORKLOADS[name] and p.method == "dopri5")
        print(problem.describe(), flush=True)
        rows += bench(problem, args.repeats)
    versions = [f"torch {torch.__version__}"]
    if diffrax is not None:
        versions += [f"jax {jax.__version__}", f"diffrax {diffrax.__version__}"]
    if torchdiffeq is not None:
        versions.append(f"torchdiffeq {torchdiffeq.__version__}")
    text = ["# neuralode against diffrax's JIT (issue 31)", "",
            f"- {', '.join(versions)}; one thread each (torch.set_num_threads(1); XLA without its thread pool)",
            "- median of interleaved rounds after one warm-up call; first call: the call that compiles, timed apart",
            "- NFE: field calls counted around our field (torchdiffeq too); diffrax: accepted + rejected steps "
            "(its Dopri5 evaluates 6 times a step, 7 on the first)",
            "- max diff: largest |y(t)| difference from neuralode eager's forward solution, over all output times",
            "", *table(rows), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
