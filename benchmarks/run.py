"""Benchmark runner: gradtx and optax side by side in one process, reported as ratios.

Every case runs both libraries in the same process, alternating which goes first, with several
repetitions after a warm-up; the table gives the median of each, the spread (the range of the
middle half of the repetitions, as ``±`` half of it relative to the median) and the ratio of
medians gradtx / optax (below 1 means gradtx is faster).

Cases (the README's "Performance" section shows the results):

- ``many``: ``chain(clip_by_global_norm(1.0), adamw(1e-3, weight_decay=1e-2))`` on a 1,000-leaf
  transformer-like tree (~2.6M float32 parameters), jitted with donated params and state;
- ``compile``: trace + lower, and XLA compile, of that step (fresh function each time);
- ``scaling``: the same for 100, 1,000 and 4,000 leaves, both libraries and ``gradtx.flat``,
  plotted to ``benchmarks/compile_scaling.png`` (log-log);
- ``eager``: one un-jitted ``update`` + ``apply_updates`` for ``adam`` and for the chain;
- ``tiny``: a 10-leaf step with the gradtx optimizer passed as a jit argument, against optax's
  step that closes over its optimizer;
- ``big``: ``adam`` on one float32 leaf of 16M elements, with the fraction of the streaming
  bandwidth bound it reaches (28 bytes per element: read g, θ, m, v and write θ, m, v);
- ``sweep``: compilations for 8 learning rates; ``memory``: state bytes per parameter.

Run ``python -m benchmarks.run`` (``make bench``); ``--quick`` for a short run, ``--write`` to
update ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradtx

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------------------------
# Problems.


def many_leaf_tree(blocks: int, seed: int = 0) -> dict:
    """``blocks`` transformer-like blocks of 8 leaves each (64x64, 64x128, 128x64 matrices,
    64/128-wide biases, a norm scale and bias): 125 blocks give 1,000 leaves, ~2.6M floats."""
    rng = np.random.default_rng(seed)

    def a(*shape):
        return jnp.asarray(rng.normal(size=shape, scale=0.02), jnp.float32)

    return {
        f"block{i:04d}": {
            "attn": {"w": a(64, 64), "b": a(64)},
            "mlp_in": {"w": a(64, 128), "b": a(128)},
            "mlp_out": {"w": a(128, 64), "b": a(64)},
            "norm": {"scale": a(64) + 1.0, "bias": a(64)},
        }
        for i in range(blocks)
    }


def gradtx_chain(flat: bool = False) -> Any:
    tx = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-3, weight_decay=1e-2))
    return gradtx.flat(tx) if flat else tx


def optax_chain() -> Any:
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=1e-2))


def make_step(opt: Any) -> Callable:
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates) if _is_optax(opt) else (
            gradtx.apply_updates(params, updates)
        ), state

    return step


def _is_optax(opt: Any) -> bool:
    return not isinstance(opt, gradtx.GradientTransformation)


def _copy(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)


def _block(tree: Any) -> Any:
    return jax.block_until_ready(tree)


# ----------------------------------------------------------------------------------------------
# Timing.


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, case: str, unit: str, g: list[float], o: list[float] | None, note: str = ""):
        gm = statistics.median(g)
        if o is None:
            self.rows.append((case, f"{_fmt(gm)} {unit} {_spread(g)}", "", "", note))
            return
        om = statistics.median(o)
        self.rows.append(
            (
                case,
                f"{_fmt(gm)} {unit} {_spread(g)}",
                f"{_fmt(om)} {unit} {_spread(o)}",
                f"{gm / om:.3f}x",
                note,
            )
        )

    def text(self) -> str:
        head = ("case", "gradtx (median ± half IQR)", "optax", "gradtx/optax", "note")
        lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def _spread(xs: list[float]) -> str:
    if len(xs) < 4:
        return ""
    q = statistics.quantiles(xs, n=4)
    med = statistics.median(xs)
    return f"±{50 * (q[2] - q[0]) / med:.0f}%"


def alternate(fns: list[Callable[[], float]], repeats: int) -> list[list[float]]:
    """Run each timing function ``repeats`` times, alternating the order every repetition."""
    out: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            out[i].append(fns[i]())
    return out


def time_steps(step: Callable, params: Any, state: Any, grads: Any, n: int) -> Callable[[], float]:
    """A timer of ``n`` calls of a donated jitted step (ms per step); keeps its own buffers."""
    box = {"p": params, "s": state}

    def run() -> float:
        p, s = box["p"], box["s"]
        t0 = time.perf_counter()
        for _ in range(n):
            p, s = step(p, s, grads)
        _block((p, s))
        dt = time.perf_counter() - t0
        box["p"], box["s"] = p, s
        return 1e3 * dt / n

    return run


# ----------------------------------------------------------------------------------------------
# Cases.


def case_many(table: Table, repeats: int, blocks: int = 125) -> None:
    params = many_leaf_tree(blocks)
    grads = jax.tree_util.tree_map(lambda p: 0.01 * jnp.ones_like(p), params)
    timers = []
    for opt in (gradtx_chain(), optax_chain(), gradtx_chain(flat=True)):
        step = jax.jit(make_step(opt), donate_argnums=(0, 1))
        p = _copy(params)
        s = opt.init(p)
        p, s = step(p, s, grads)  # warm-up (compiles)
        _block((p, s))
        timers.append(time_steps(step, p, s, grads, n=20))
    g, o, f = alternate(timers, repeats)
    table.add(f"many: jitted step, {8 * blocks} leaves", "ms", g, o)
    table.add(f"many: jitted step, gradtx.flat, {8 * blocks} leaves", "ms", f, o)


def _compile_times(make_opt: Callable[[], Any], params: Any) -> tuple[float, float]:
    """(trace + lower seconds, XLA compile seconds) of a fresh donated jitted step."""
    jax.clear_caches()
    gc.collect()
    opt = make_opt()
    grads = params
    state = jax.eval_shape(opt.init, params)
    step = jax.jit(make_step(opt), donate_argnums=(0, 1))
    t0 = time.perf_counter()
    lowered = step.trace(params, state, grads).lower()
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def compile_figures(blocks: int, repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    params = jax.eval_shape(lambda: many_leaf_tree(blocks))
    makers = {
        "gradtx": gradtx_chain,
        "optax": optax_chain,
        "gradtx.flat": lambda: gradtx_chain(flat=True),
    }
    res: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in makers}
    names = list(makers)
    for r in range(repeats):
        for k in names if r % 2 == 0 else reversed(names):
            tl, tc = _compile_times(makers[k], params)
            res[k][0].append(tl)
            res[k][1].append(tc)
    return res


def case_compile(table: Table, repeats: int, blocks: int = 125) -> None:
    res = compile_figures(blocks, repeats)
    n = 8 * blocks
    for what, i in (("trace + lower", 0), ("XLA compile", 1)):
        table.add(f"compile: {what}, {n} leaves", "s", res["gradtx"][i], res["optax"][i])
        table.add(f"compile: {what}, gradtx.flat", "s", res["gradtx.flat"][i], res["optax"][i])
    tot = {k: [a + b for a, b in zip(*v, strict=True)] for k, v in res.items()}
    table.add(f"compile: total, {n} leaves", "s", tot["gradtx"], tot["optax"])
    table.add("compile: total, gradtx.flat", "s", tot["gradtx.flat"], tot["optax"])


def case_scaling(table: Table, repeats: int, sizes: tuple[int, ...], plot: str | None) -> None:
    curves: dict[str, list[float]] = {"gradtx": [], "optax": [], "gradtx.flat": []}
    leaves = []
    for blocks in sizes:
        res = compile_figures(blocks, repeats)
        leaves.append(8 * blocks)
        tot = {k: [a + b for a, b in zip(*v, strict=True)] for k, v in res.items()}
        for k in curves:
            curves[k].append(statistics.median(tot[k]))
        table.add(f"scaling: trace+compile, {8 * blocks} leaves", "s", tot["gradtx"], tot["optax"])
        table.add(
            f"scaling: trace+compile, flat, {8 * blocks} leaves",
            "s",
            tot["gradtx.flat"],
            tot["optax"],
        )
    for k, ys in curves.items():
        slope = np.polyfit(np.log(leaves), np.log(ys), 1)[0]
        table.rows.append((f"scaling: log-log slope, {k}", f"{slope:.2f}", "", "", ""))
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.2))
        for k, ys in curves.items():
            ax.loglog(leaves, ys, "o-", label=k)
        ax.loglog(
            leaves,
            [curves["optax"][0] * n / leaves[0] for n in leaves],
            "k:",
            lw=1,
            label="linear from optax's first point",
        )
        ax.set_xlabel("number of parameter leaves")
        ax.set_ylabel("trace + lower + compile (s)")
        ax.set_title("Compile time of chain(clip_by_global_norm, adamw)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        plt.close(fig)


def case_eager(table: Table, repeats: int, blocks: int = 125) -> None:
    params = many_leaf_tree(blocks)
    grads = jax.tree_util.tree_map(lambda p: 0.01 * jnp.ones_like(p), params)
    for name, g_opt, o_opt in (
        ("adam", gradtx.adam(1e-3), optax.adam(1e-3)),
        ("chain", gradtx_chain(), optax_chain()),
    ):

        def timer(opt, apply, compiled=True):
            state = opt.init(params)

            def once() -> float:
                with gradtx.eager_jit(compiled):
                    t0 = time.perf_counter()
                    u, s = opt.update(grads, state, params)
                    _block((apply(params, u), s))
                    return 1e3 * (time.perf_counter() - t0)

            return once

        runs = [
            timer(g_opt, gradtx.apply_updates),
            timer(o_opt, optax.apply_updates),
            timer(g_opt, gradtx.apply_updates, compiled=False),
        ]
        firsts = [run() for run in runs]  # the first gradtx call compiles
        g, o, plain = alternate(runs, repeats)
        table.add(
            f"eager: {name}, {8 * blocks} leaves (compiled, the default)",
            "ms",
            g,
            o,
            f"first call {firsts[0]:.0f} ms (compiles) vs optax {firsts[1]:.0f} ms",
        )
        table.add(f"eager: {name}, {8 * blocks} leaves, eager_jit(False)", "ms", plain, o)


def case_tiny(table: Table, repeats: int) -> None:
    rng = np.random.default_rng(0)
    params = {f"l{i}": jnp.asarray(rng.normal(size=(8,)), jnp.float32) for i in range(10)}
    grads = jax.tree_util.tree_map(lambda p: 0.1 * p, params)
    g_opt, o_opt = gradtx.adam(1e-3), optax.adam(1e-3)

    @jax.jit
    def g_step(opt, params, state, grads):
        u, state = opt.update(grads, state, params)
        return gradtx.apply_updates(params, u), state

    @jax.jit
    def o_step(params, state, grads):
        u, state = o_opt.update(grads, state, params)
        return optax.apply_updates(params, u), state

    n = 500

    def timer(call, state):
        box = {"p": params, "s": state}

        def run() -> float:
            p, s = box["p"], box["s"]
            t0 = time.perf_counter()
            for _ in range(n):
                p, s = call(p, s)
            _block((p, s))
            box["p"], box["s"] = p, s
            return 1e6 * (time.perf_counter() - t0) / n

        run()
        return run

    gt = timer(lambda p, s: g_step(g_opt, p, s, grads), g_opt.init(params))
    ot = timer(lambda p, s: o_step(p, s, grads), o_opt.init(params))
    g, o = alternate([gt, ot], repeats)
    table.add("tiny: 10 leaves, optimizer as jit argument", "µs", g, o)


def case_big(table: Table, repeats: int, n: int = 1 << 24) -> None:
    x = jax.random.normal(jax.random.key(0), (n,), jnp.float32)
    grads = 0.01 * x

    @jax.jit
    def axpy(a, y):
        return 1.0001 * a + y

    axpy_d = jax.jit(lambda a, y: 1.0001 * a + y, donate_argnums=(1,))
    del axpy
    box = {"y": jnp.array(x, copy=True)}

    def bw() -> float:
        y = box["y"]
        t0 = time.perf_counter()
        for _ in range(10):
            y = axpy_d(grads, y)
        _block(y)
        box["y"] = y
        return (time.perf_counter() - t0) / 10

    bw()
    timers = []
    for opt in (gradtx.adam(1e-3), optax.adam(1e-3)):
        step = jax.jit(make_step(opt), donate_argnums=(0, 1))
        p = jnp.array(x, copy=True)
        s = opt.init(p)
        p, s = step(p, s, grads)
        timers.append(time_steps(step, p, s, grads, n=10))
    g, o, b = alternate([*timers, bw], repeats)
    bandwidth = 12 * n / statistics.median(b)  # a*x+y reads 2 and writes 1 float32 array
    frac = lambda ms: 28 * n / (statistics.median(ms) / 1e3) / bandwidth  # noqa: E731
    table.add(
        "big: adam, one 16M-element leaf",
        "ms",
        g,
        o,
        f"bandwidth bound reached: gradtx {100 * frac(g):.0f}%, optax {100 * frac(o):.0f}% "
        f"(streaming {bandwidth / 1e9:.1f} GB/s)",
    )


def case_sweep(table: Table) -> None:
    from jax._src import monitoring

    counter = {"n": 0}

    def listener(event, *args, **kwargs):
        if event.endswith("backend_compile_duration"):
            counter["n"] += 1

    params = {"w": jnp.ones((16, 16)), "b": jnp.ones(16)}
    grads = jax.tree_util.tree_map(lambda p: 0.1 * p, params)
    lrs = [float(10.0**-k) for k in np.linspace(1, 4, 8)]

    @jax.jit
    def g_step(opt, params, state):
        u, state = opt.update(grads, state, params)
        return gradtx.apply_updates(params, u), state

    g_opts = [gradtx.adam(lr) for lr in lrs]
    o_opts = [optax.adam(lr) for lr in lrs]
    g_states = [opt.init(params) for opt in g_opts]  # initialised outside the count: only
    o_states = [opt.init(params) for opt in o_opts]  # the training step's compilations count
    monitoring.register_event_duration_secs_listener(listener)
    try:
        counter["n"] = 0
        for opt, state in zip(g_opts, g_states, strict=True):
            _block(g_step(opt, params, state))
        g_n = counter["n"]
        counter["n"] = 0
        for opt, state in zip(o_opts, o_states, strict=True):
            _block(jax.jit(make_step(opt))(params, state, grads))
        o_n = counter["n"]
    finally:
        monitoring.unregister_event_duration_listener(listener)
    table.rows.append(
        (
            "sweep: compilations for 8 learning rates",
            str(g_n),
            str(o_n),
            "",
            "optax bakes the rate into its closure",
        )
    )


def _state_bytes(state: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state))


def case_memory(table: Table) -> None:
    params = jax.eval_shape(lambda: many_leaf_tree(125))
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    for label, g_opt, o_opt in (
        ("adam, float32 moments", gradtx.adam(1e-3), optax.adam(1e-3)),
        (
            "adam, bfloat16 moments",
            gradtx.adam(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
            optax.adam(1e-3, mu_dtype=jnp.bfloat16),
        ),
    ):
        gb = _state_bytes(jax.eval_shape(g_opt.init, params))
        ob = _state_bytes(jax.eval_shape(o_opt.init, params))
        table.rows.append(
            (
                f"memory: {label}, bytes/param",
                f"{gb / n:.4f}",
                f"{ob / n:.4f}",
                f"{gb / ob:.3f}x",
                "optax has no nu_dtype" if "bfloat16" in label else "",
            )
        )


# ----------------------------------------------------------------------------------------------


def header() -> str:
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"jax {jax.__version__}, jaxlib {md.version('jaxlib')}, optax {optax.__version__}, "
        f"gradtx {gradtx.__version__}, backend {jax.default_backend()}"
    )


CASES = ("many", "compile", "scaling", "eager", "tiny", "big", "sweep", "memory")


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of cases")
    ap.add_argument("--repeats", type=int, default=15, help="repetitions of the timed cases")
    ap.add_argument("--compile-repeats", type=int, default=3)
    ap.add_argument(
        "--scaling-repeats", type=int, default=1, help="a 4,000-leaf tree compiles for minutes"
    )
    ap.add_argument(
        "--scaling-blocks", default="13,125,500", help="8-leaf blocks per scaling point"
    )
    ap.add_argument("--quick", action="store_true", help="few repetitions, small sizes")
    ap.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md and plot")
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        ap.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    reps = 3 if args.quick else args.repeats
    creps = 1 if args.quick else args.compile_repeats
    blocks = 13 if args.quick else 125
    table = Table()
    t0 = time.perf_counter()
    for c in cases:
        print(f"[{time.perf_counter() - t0:6.1f}s] {c} ...", file=sys.stderr, flush=True)
        if c == "many":
            case_many(table, reps, blocks)
        elif c == "compile":
            case_compile(table, creps, blocks)
        elif c == "scaling":
            sizes = (2, 13) if args.quick else tuple(int(b) for b in args.scaling_blocks.split(","))
            plot = os.path.join(HERE, "compile_scaling.png") if args.write else None
            case_scaling(table, 1 if args.quick else args.scaling_repeats, sizes, plot)
        elif c == "eager":
            case_eager(table, reps, blocks)
        elif c == "tiny":
            case_tiny(table, reps)
        elif c == "big":
            case_big(table, reps, 1 << 16 if args.quick else 1 << 24)
        elif c == "sweep":
            case_sweep(table)
        elif c == "memory":
            case_memory(table)
    text = header() + "\n\n" + table.text()
    print(text)
    if args.write:
        with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
            f.write(_results_md(text, reps, creps, argv if argv is not None else sys.argv[1:]))
    return text


def _results_md(text: str, reps: int, creps: int, argv: list[str]) -> str:
    return (
        "# Benchmark results\n\n"
        f"Command: `python -m benchmarks.run {' '.join(argv)}`.\n\n"
        "Written by `python -m benchmarks.run --write` (`make bench`). gradtx and optax run in "
        f"one process, alternating; timed cases repeat {reps} times after a warm-up "
        f"(compile cases {creps} times, each on a fresh function after `jax.clear_caches()`; "
        "compile scaling once per size). "
        "Each cell is the median, with half the interquartile range relative to the median; "
        "the ratio is of medians (below 1: gradtx is faster).\n\n"
        + text
        + "\n\n![compile scaling](compile_scaling.png)\n"
    )


if __name__ == "__main__":
    main()
