"""Benchmark: gradtx.minimize vs scipy's L-BFGS-B vs optax.lbfgs in a jitted while_loop.

Times each solver on Rosenbrock (2, 10, 100-d), a 100-d quadratic with condition number 1e4 and
L2-regularised logistic regression on scikit-learn's breast-cancer data (standardised), all in
float64, with the same stopping rules (SciPy's: max |g| <= 1e-5 or relative reduction of f
<= 2.2e-9; at most 15000 iterations). Prints run time after compilation (best of --repeats),
time of a first call including compilation (best of --compile-repeats, each with a fresh
function so nothing is cached), function evaluations (one value-and-gradient call each), and the
ratios. scipy is given the objective as a jitted JAX value_and_grad, as a JAX user would.

Run: ``python benchmarks/lbfgs.py`` (or ``make bench``).
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


def bench_problem(name, f, x0, args, opts):
    """One table row: times, evaluation counts, final values and the distance to scipy's x."""
    # gradtx.minimize
    _, (x_g, nfev_g, f_g) = best_time(lambda: solve_gradtx(fresh(f), x0, args), 1)
    t_gc, _ = best_time(lambda: solve_gradtx(fresh(f), x0, args), opts.compile_repeats)
    t_g, _ = best_time(lambda: solve_gradtx(f, x0, args), opts.repeats)
    # optax.lbfgs in a jitted while_loop
    t_oc, _ = best_time(
        lambda: solve_optax(make_optax_solver(fresh(f)), x0, args), opts.compile_repeats
    )
    run = make_optax_solver(f)
    _, (x_o, nfev_o, f_o) = best_time(lambda: solve_optax(run, x0, args), 1)
    t_o, _ = best_time(lambda: solve_optax(run, x0, args), opts.repeats)
    # scipy L-BFGS-B with a jitted JAX objective
    vg = jax.jit(jax.value_and_grad(f))
    _, (x_s, nfev_s, f_s) = best_time(lambda: solve_scipy(vg, x0, args), 1)
    t_s, _ = best_time(lambda: solve_scipy(vg, x0, args), max(3, opts.repeats // 4))
    dx = float(np.max(np.abs(np.asarray(x_g) - x_s)) / max(np.max(np.abs(x_s)), 1e-300))
    return (name, t_g, t_gc, t_o, t_oc, t_s, nfev_g, nfev_o, nfev_s, f_g, f_o, f_s, dx)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--compile-repeats", type=int, default=3)
    opts = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"jax {jax.__version__} ({jax.default_backend()}), optax {optax.__version__}, "
          f"scipy {scipy.__version__}; {cpu}, {os.cpu_count()} CPUs; float64")  # fmt: skip
    rows = [bench_problem(name, f, x0, args, opts) for name, f, x0, args in problems()]

    ms = lambda t: f"{1e3 * t:8.2f}"  # noqa: E731
    print()
    print(
        "| problem | gradtx run ms | optax run ms | scipy ms | optax/gradtx | scipy/gradtx "
        "| gradtx 1st call s | optax 1st call s | nfev gradtx / optax / scipy "
        "| |x_gradtx - x_scipy|/|x_scipy| |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        name, t_g, t_gc, t_o, t_oc, t_s, n_g, n_o, n_s, *_, dx = r
        print(f"| {name} | {ms(t_g)} | {ms(t_o)} | {ms(t_s)} | {t_o / t_g:6.2f}x | "
              f"{t_s / t_g:6.1f}x | {t_gc:6.2f} | {t_oc:6.2f} | {n_g} / {n_o} / {n_s} | "
              f"{dx:.1e} |")  # fmt: skip
    print()
    print("final f (gradtx / optax / scipy):")
    for r in rows:
        print(f"  {r[0]}: {r[9]:.6e} / {r[10]:.6e} / {r[11]:.6e}")


if __name__ == "__main__":
    main()
