"""Benchmark: gradtx.minimize vs scipy's L-BFGS-B vs optax.lbfgs in a jitted while_loop.

Times each solver on Rosenbrock (2, 10, 100-d), a 100-d quadratic with condition number 1e4 and
L2-regularised logistic regression on scikit-learn's breast-cancer data (standardised), all in
float64, with the same stopping rules (SciPy's: max |g| <= 1e-5 or relative reduction of f
<= 2.2e-9; at most 15000 iterations). Prints run time after compilation (best of --repeats),
time of a first call including compilation (best of --compile-repeats, each with a fresh
function so nothing is cached), function evaluations (one value-and-gradient call each), and the
ratios. scipy is timed twice: given the objective as a jitted JAX value_and_grad (as a JAX user
would) and as plain NumPy code (no JAX dispatch per evaluation). gradtx and optax runs alternate
so that load from other processes affects both alike.

Run: ``python benchmarks/lbfgs.py`` (or ``make bench-lbfgs``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.optimize  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402

import gradtx  # noqa: E402

GTOL, FTOL, MAXITER = 1e-5, 2.220446049250313e-09, 15000


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def quadratic(x, A, b):
    return 0.5 * x @ (A @ x) - b @ x


def logistic(w, X, y, lam):
    z = X @ w[:-1] + w[-1]
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z) + 0.5 * lam * jnp.sum(w[:-1] ** 2)


def problems():
    rng = np.random.default_rng(0)
    n = 100
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (Q * np.logspace(0, 4, n)) @ Q.T
    A = jnp.asarray(0.5 * (A + A.T))
    b = jnp.asarray(rng.normal(size=n))
    X, y = load_breast_cancer(return_X_y=True)
    X = jnp.asarray((X - X.mean(0)) / X.std(0))
    y = jnp.asarray(y, jnp.float64)
    return [
        ("rosenbrock-2", rosen, jnp.zeros(2), ()),
        ("rosenbrock-10", rosen, jnp.zeros(10), ()),
        ("rosenbrock-100", rosen, jnp.zeros(100), ()),
        ("quadratic-100", quadratic, jnp.zeros(100), (A, b)),
        ("logreg-breast-cancer", logistic, jnp.zeros(31), (X, y, jnp.asarray(1e-2))),
    ]


def fresh(f):
    """A new function object (so jit caches keyed on the function miss)."""
    return lambda x, *a: f(x, *a)


def solve_gradtx(f, x0, args):
    # The result's scalars are host values, so the solve has finished when minimize returns
    # (x is an output of the same execution).
    res = gradtx.minimize(f, x0, args, gtol=GTOL, ftol=FTOL, maxiter=MAXITER)
    return res.x, int(res.nfev), float(res.fun)


def make_optax_solver(f):
    """optax.lbfgs in a jitted while_loop, the loop from optax's documentation, with the same
    stopping rules as the others."""
    opt = optax.lbfgs()

    @jax.jit
    def run(x0, args):
        fn = lambda x: f(x, *args)  # noqa: E731
        vg = optax.value_and_grad_from_state(fn)

        def body(c):
            x, state, k, nfev, f_old, _ = c
            v, g = vg(x, state=state)
            u, state = opt.update(g, state, x, value=v, grad=g, value_fn=fn)
            x = optax.apply_updates(x, u)
            ls = state[-1]
            f_new = ls.value
            nfev = nfev + ls.info.num_linesearch_steps
            gdone = jnp.max(jnp.abs(ls.grad)) <= GTOL
            fdone = (v - f_new) <= FTOL * jnp.maximum(jnp.maximum(jnp.abs(v), jnp.abs(f_new)), 1)
            return x, state, k + 1, nfev, f_new, gdone | fdone

        def cond(c):
            return (~c[5]) & (c[2] < MAXITER)

        init = (x0, opt.init(x0), 0, 1, jnp.asarray(jnp.inf), False)
        x, state, k, nfev, fval, _ = jax.lax.while_loop(cond, body, init)
        return x, nfev, fval

    return run


def solve_optax(run, x0, args):
    x, nfev, fval = jax.block_until_ready(run(x0, args))
    return x, int(nfev), float(fval)


def solve_scipy(vg, x0, args):
    def fun(x):
        v, g = vg(x, *args)
        return float(v), np.asarray(g)

    r = scipy.optimize.minimize(
        fun,
        np.asarray(x0),
        jac=True,
        method="L-BFGS-B",
        options=dict(gtol=GTOL, ftol=FTOL, maxiter=MAXITER),
    )
    return r.x, int(r.nfev), float(r.fun)


def best_time(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def numpy_objective(name, args):
    """The same objective in plain NumPy (value, gradient), for scipy without JAX dispatch."""
    if name.startswith("rosenbrock"):
        return lambda x: (scipy.optimize.rosen(x), scipy.optimize.rosen_der(x))
    if name.startswith("quadratic"):
        A, b = (np.asarray(a) for a in args)

        def quad(x):
            Ax = A @ x
            return 0.5 * x @ Ax - b @ x, Ax - b

        return quad
    X, y, lam = (np.asarray(a) for a in args)

    def logreg(w):
        z = X @ w[:-1] + w[-1]
        r = 1.0 / (1.0 + np.exp(-z)) - y
        v = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * lam * np.sum(w[:-1] ** 2)
        return v, np.r_[X.T @ r / len(y) + lam * w[:-1], np.mean(r)]

    return logreg


def solve_scipy_numpy(fun, x0):
    r = scipy.optimize.minimize(
        fun,
        np.asarray(x0),
        jac=True,
        method="L-BFGS-B",
        options=dict(gtol=GTOL, ftol=FTOL, maxiter=MAXITER),
    )
    return r.x, int(r.nfev), float(r.fun)


def interleaved_best(fns, repeats):
    """Best time of each function, running them in turn so that load affects all alike."""
    best = [np.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def bench_problem(name, f, x0, args, opts):
    """One table row: times, evaluation counts, final values and the distance to scipy's x."""
    # First calls including compilation (fresh functions, so no cache is hit).
    t_gc, t_oc = interleaved_best(
        [
            lambda: solve_gradtx(fresh(f), x0, args),
            lambda: solve_optax(make_optax_solver(fresh(f)), x0, args),
        ],
        opts.compile_repeats,
    )
    run = make_optax_solver(f)
    vg = jax.jit(jax.value_and_grad(f))
    np_fun = numpy_objective(name, args)
    x_g, nfev_g, f_g = solve_gradtx(f, x0, args)
    x_o, nfev_o, f_o = solve_optax(run, x0, args)
    x_s, nfev_s, f_s = solve_scipy(vg, x0, args)
    _, nfev_sn, _ = solve_scipy_numpy(np_fun, x0)
    t_g, t_o = interleaved_best(
        [lambda: solve_gradtx(f, x0, args), lambda: solve_optax(run, x0, args)], opts.repeats
    )
    t_s, t_sn = interleaved_best(
        [lambda: solve_scipy(vg, x0, args), lambda: solve_scipy_numpy(np_fun, x0)],
        max(3, opts.repeats // 4),
    )
    dx = float(np.max(np.abs(np.asarray(x_g) - x_s)) / max(np.max(np.abs(x_s)), 1e-300))
    return dict(
        name=name, t_g=t_g, t_gc=t_gc, t_o=t_o, t_oc=t_oc, t_s=t_s, t_sn=t_sn,
        n_g=nfev_g, n_o=nfev_o, n_s=nfev_s, n_sn=nfev_sn, f_g=f_g, f_o=f_o, f_s=f_s, dx=dx,
    )  # fmt: skip


def bench_bounded(n, opts, lower=-2.0, upper=0.5):
    """Rosenbrock-n in the box [lower, upper] (excludes (1, ..., 1)): gradtx vs scipy only
    (optax has no bound-constrained solver)."""
    x0 = jnp.zeros(n)
    bnds = (lower, upper)
    (t_gc,) = interleaved_best(
        [lambda: gradtx.minimize(fresh(rosen), x0, bounds=bnds)], opts.compile_repeats
    )
    res = gradtx.minimize(rosen, x0, bounds=bnds)
    np_fun = numpy_objective("rosenbrock", ())

    def scipy_solve():
        return scipy.optimize.minimize(
            np_fun, np.zeros(n), jac=True, method="L-BFGS-B", bounds=[bnds] * n,
            options=dict(gtol=GTOL, ftol=FTOL, maxiter=MAXITER),
        )  # fmt: skip

    ref = scipy_solve()
    t_g, t_s = interleaved_best(
        [lambda: gradtx.minimize(rosen, x0, bounds=bnds), scipy_solve], opts.repeats
    )
    dx = float(np.max(np.abs(np.asarray(res.x) - ref.x)) / np.max(np.abs(ref.x)))
    return f"rosenbrock-{n} in [{lower}, {upper}]", t_g, t_gc, t_s, int(res.nfev), ref.nfev, dx


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--compile-repeats", type=int, default=3)
    opts = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"jax {jax.__version__} ({jax.default_backend()}), optax {optax.__version__}, "
          f"scipy {scipy.__version__}; {cpu}, {os.cpu_count()} CPUs; float64")  # fmt: skip
    rows = [bench_problem(name, f, x0, args, opts) for name, f, x0, args in problems()]

    ms = lambda t: f"{1e3 * t:.3g}"  # noqa: E731
    print()
    print(
        "| problem | gradtx ms | optax ms | scipy ms (JAX fn / NumPy fn) | optax / gradtx "
        "| scipy / gradtx (JAX / NumPy fn) | 1st call s: gradtx / optax "
        "| evaluations: gradtx / optax / scipy | x vs scipy |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {ms(r['t_g'])} | {ms(r['t_o'])} | {ms(r['t_s'])} / {ms(r['t_sn'])} "
            f"| {r['t_o'] / r['t_g']:.2f}x | {r['t_s'] / r['t_g']:.0f}x / "
            f"{r['t_sn'] / r['t_g']:.1f}x | {r['t_gc']:.2f} / {r['t_oc']:.2f} "
            f"| {r['n_g']} / {r['n_o']} / {r['n_s']} | {r['dx']:.0e} |"
        )
    print()
    print(
        "| bounded problem | gradtx ms | scipy ms (NumPy fn) | scipy / gradtx "
        "| gradtx 1st call s | evaluations: gradtx / scipy | x vs scipy |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n in (10, 100):
        name, t_g, t_gc, t_s, n_g, n_s, dx = bench_bounded(n, opts)
        print(f"| {name} | {ms(t_g)} | {ms(t_s)} | {t_s / t_g:.1f}x | {t_gc:.2f} | {n_g} / {n_s} "
              f"| {dx:.0e} |")  # fmt: skip
    print()
    print("final f (gradtx / optax / scipy):")
    for r in rows:
        print(f"  {r['name']}: {r['f_g']:.6e} / {r['f_o']:.6e} / {r['f_s']:.6e}")
    if any(r["n_sn"] != r["n_s"] for r in rows):
        print("scipy evaluations with the NumPy objective:", [r["n_sn"] for r in rows])


if __name__ == "__main__":
    main()
