"""gradtx.minimize against scipy.optimize.minimize(method="L-BFGS-B"): same minimiser (1e-5
relative), at most 1.2x scipy's evaluations, bounds active where scipy's are; result record,
progress printing, pytrees, no recompilation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from conftest import count_compilations
from sklearn.datasets import load_breast_cancer

import gradtx
from gradtx import MinimizeStatus


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def quadratic(x, A, b):
    return 0.5 * x @ (A @ x) - b @ x


def logistic(w, X, y, lam):
    z = X @ w[:-1] + w[-1]
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z) + 0.5 * lam * jnp.sum(w[:-1] ** 2)


def np_rosen(x):
    return scipy.optimize.rosen(x), scipy.optimize.rosen_der(x)


def np_quadratic(x, A, b):
    Ax = A @ x
    return 0.5 * x @ Ax - b @ x, Ax - b


def np_logistic(w, X, y, lam):
    z = X @ w[:-1] + w[-1]
    r = 1.0 / (1.0 + np.exp(-z)) - y
    v = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * lam * np.sum(w[:-1] ** 2)
    return v, np.r_[X.T @ r / len(y) + lam * w[:-1], np.mean(r)]


def _problems():
    rng = np.random.default_rng(0)
    n = 100
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (Q * np.logspace(0, 4, n)) @ Q.T  # condition number 1e4
    A = 0.5 * (A + A.T)
    b = rng.normal(size=n)
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return {
        "rosen2": (rosen, np.zeros(2), ()),
        "rosen10": (rosen, np.zeros(10), ()),
        "rosen100": (rosen, np.zeros(100), ()),
        "quadratic100": (quadratic, np.zeros(100), (A, b)),
        "logistic_breast_cancer": (logistic, np.zeros(31), (X, y.astype(float), 1e-2)),
    }


PROBLEMS = _problems()
# The same objectives in plain NumPy (value, gradient) for SciPy: an independent oracle.
NUMPY = {rosen: np_rosen, quadratic: np_quadratic, logistic: np_logistic}


def _scipy(f, x0, args, bounds=None, **options):
    fun = NUMPY[f]
    sb = None
    if bounds is not None:
        lo, hi = (np.broadcast_to(b, x0.shape) for b in bounds)
        sb = list(zip(lo, hi, strict=True))
    return scipy.optimize.minimize(
        fun, x0, args=args, jac=True, method="L-BFGS-B", bounds=sb, options=options
    )


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_same_minimiser_as_scipy_with_fewer_evaluations(x64, name):
    f, x0, args = PROBLEMS[name]
    # Default tolerances (SciPy's): evaluations at most 1.2x SciPy's.
    ref = _scipy(f, x0, args)
    res = gradtx.minimize(f, jnp.asarray(x0), args)
    assert bool(res.success), res.message
    assert int(res.nfev) <= 1.2 * ref.nfev, (int(res.nfev), ref.nfev)
    # Tight tolerances (both solvers): the minimisers agree to 1e-5 relative.
    tight = dict(ftol=1e-14, gtol=1e-9)
    ref = _scipy(f, x0, args, **tight, maxiter=20000)
    res = gradtx.minimize(f, jnp.asarray(x0), args, **tight)
    assert _rel(res.x, ref.x) <= 1e-5, _rel(res.x, ref.x)
    assert int(res.nfev) <= 1.2 * ref.nfev, (int(res.nfev), ref.nfev)
    np.testing.assert_allclose(float(res.fun), ref.fun, rtol=1e-9, atol=1e-12)
    v, g = NUMPY[f](np.asarray(res.x), *args)
    np.testing.assert_allclose(float(res.fun), v, rtol=1e-12, atol=1e-20)
    np.testing.assert_allclose(np.asarray(res.grad), g, rtol=1e-8, atol=1e-12)
    assert float(res.grad_norm) == pytest.approx(float(jnp.max(jnp.abs(res.grad))), rel=1e-12)


@pytest.mark.parametrize("n", [2, 10, 100])
def test_bounds_active_at_the_solution_match_scipy(x64, n):
    x0 = np.zeros(n)
    lower, upper = -2.0, 0.5  # excludes the unconstrained minimiser (1, ..., 1)
    tight = dict(ftol=1e-14, gtol=1e-9)
    ref = _scipy(rosen, x0, (), bounds=(lower, upper), **tight)
    res = gradtx.minimize(rosen, jnp.asarray(x0), bounds=(lower, upper), **tight)
    assert bool(res.success), res.message
    x = np.asarray(res.x)
    assert _rel(x, ref.x) <= 1e-5
    active_ref = np.isclose(ref.x, upper) | np.isclose(ref.x, lower)
    assert active_ref.any()
    np.testing.assert_array_equal(np.isclose(x, upper) | np.isclose(x, lower), active_ref)
    assert np.all(x >= lower) and np.all(x <= upper)
    np.testing.assert_allclose(float(res.fun), ref.fun, rtol=1e-10)
    assert int(res.nfev) <= 1.3 * ref.nfev, (int(res.nfev), ref.nfev)


def test_pytree_bounds_with_unbounded_leaves(x64):
    """Bounds as a pytree (None = unbounded), x0 a dict: same as scipy on the flat problem."""

    def f(p):
        return rosen(jnp.concatenate([p["a"], p["b"]]))

    p0 = {"a": jnp.zeros(3), "b": jnp.zeros(3)}
    lower = {"a": -1.0, "b": None}
    upper = {"a": jnp.array([0.3, 2.0, 2.0]), "b": None}
    tight = dict(ftol=1e-14, gtol=1e-9)
    res = gradtx.minimize(f, p0, bounds=(lower, upper), **tight)
    # dict leaves flatten in key order: a then b.
    lo = np.r_[-1.0, -1.0, -1.0, -np.inf, -np.inf, -np.inf]
    hi = np.r_[0.3, 2.0, 2.0, np.inf, np.inf, np.inf]
    ref = _scipy(rosen, np.zeros(6), (), bounds=(lo, hi), **tight)
    x = np.concatenate([np.asarray(res.x["a"]), np.asarray(res.x["b"])])
    assert _rel(x, ref.x) <= 1e-5
    assert x[0] == pytest.approx(0.3)
    assert set(res.x) == {"a", "b"} and res.x["b"].shape == (3,)


def test_pytree_x0_matches_flat(x64):
    def f(p):
        return rosen(jnp.concatenate([p["w"].ravel(), p["v"]]))

    res_tree = gradtx.minimize(f, {"w": jnp.zeros((2, 2)), "v": jnp.zeros(2)})
    res_flat = gradtx.minimize(rosen, jnp.zeros(6))
    # f concatenates w then v (whatever order the dict flattens in): compare as f sees them.
    seen = np.concatenate([np.asarray(res_tree.x["w"]).ravel(), np.asarray(res_tree.x["v"])])
    np.testing.assert_allclose(seen, np.asarray(res_flat.x), atol=1e-5)
    assert int(res_tree.nfev) == int(res_flat.nfev)
    assert res_tree.grad["w"].shape == (2, 2)


def test_traceable_vmap_over_starting_points(x64):
    x0s = jnp.array([[0.0, 0.0], [-1.2, 1.0], [2.0, 2.0]])
    res = jax.jit(jax.vmap(lambda x0: gradtx.minimize(rosen, x0)))(x0s)
    np.testing.assert_allclose(np.asarray(res.x), np.ones((3, 2)), atol=1e-5)
    assert np.asarray(res.success).all() and res.nit.shape == (3,)


def test_float32_by_default():
    res = gradtx.minimize(lambda x: jnp.sum((x - 3.0) ** 2), jnp.zeros(3))
    assert res.x.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(res.x), 3.0, rtol=1e-5)
    assert bool(res.success)


def test_float32_flat_tail_counts_as_converged():
    """In float32 the last accepted steps change f by less than rounding; the solve must still
    end on the gradient test, not report a line-search failure."""

    def loss(p, X, y):
        z = X @ p["w"] + p["b"]
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z) + 1e-3 * jnp.sum(p["w"] ** 2)

    X = jnp.ones((8, 3)) * jnp.arange(8.0)[:, None] / 8
    y = (jnp.arange(8) % 2).astype(jnp.float32)
    res = gradtx.minimize(loss, {"w": jnp.zeros(3), "b": jnp.zeros(())}, (X, y))
    assert bool(res.success) and int(res.status) == MinimizeStatus.GTOL, res.message
    assert float(res.grad_norm) <= 1e-5


def test_one_compilation_for_new_starts_tolerances_data_and_bounds(x64):
    f, x0, args = PROBLEMS["quadratic100"]
    gradtx.minimize(f, jnp.asarray(x0), args, maxiter=5)
    gradtx.minimize(f, jnp.asarray(x0), args, bounds=(-1.0, 1.0), maxiter=5)
    A, b = args
    A2, x1 = A * 2.0, np.ones(100)
    with count_compilations() as c:
        gradtx.minimize(f, x1, (A2, b), maxiter=7, gtol=1e-3, ftol=1e-12)
        gradtx.minimize(f, x1, (A, b), bounds=(-0.5, 0.5), maxiter=9)
    assert c["n"] == 0
    # a weakly typed start (jnp.full of a Python float) runs the solver compiled for strongly
    # typed ones; only the cast that strips the weak type compiles (once: warmed here)
    weak = jnp.full(100, 0.1)
    assert weak.weak_type
    jnp.asarray(jnp.full(100, 0.2), weak.dtype)
    with count_compilations() as c:
        gradtx.minimize(f, weak, (A, b), maxiter=5)
    assert c["n"] == 0


def test_status_messages(x64):
    res = gradtx.minimize(rosen, jnp.zeros(10), maxiter=3)
    assert int(res.status) == MinimizeStatus.MAXITER and not bool(res.success)
    assert int(res.nit) == 3 and "maximum number of iterations" in res.message
    res = gradtx.minimize(rosen, jnp.zeros(10), maxiter=0)  # no step at all
    assert int(res.nit) == 0 and int(res.nfev) == 1 and float(res.fun) == 9.0
    res = gradtx.minimize(rosen, jnp.zeros(10), maxfev=5)
    assert int(res.status) == MinimizeStatus.MAXFEV and int(res.nfev) >= 5
    res = gradtx.minimize(lambda x: jnp.sum(jnp.log(x)), jnp.array([-1.0]))
    assert int(res.status) == MinimizeStatus.NON_FINITE and "not finite" in res.message
    res = gradtx.minimize(rosen, jnp.ones(4))  # already at the minimiser
    assert int(res.status) == MinimizeStatus.GTOL and int(res.nit) == 0 and int(res.nfev) == 1


def test_progress_is_printed_from_inside_the_loop(x64, capsys):
    res = gradtx.minimize(rosen, jnp.zeros(4), print_every=5, maxiter=12, gtol=0.0, ftol=0.0)
    jax.effects_barrier()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("minimize:")]
    assert int(res.nit) == 12
    assert [int(ln.split()[2]) for ln in lines] == [5, 10]
    assert "f = " in lines[0] and "nfev = " in lines[0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="method must be 'lbfgs', got 'bfgs'"):
        gradtx.minimize(rosen, jnp.zeros(2), method="bfgs")
    with pytest.raises(ValueError, match=r"maxiter must be an int in \[0, 2\*\*24\], got -1"):
        gradtx.minimize(rosen, jnp.zeros(2), maxiter=-1)
    with pytest.raises(ValueError, match="gtol must be a finite number >= 0"):
        gradtx.minimize(rosen, jnp.zeros(2), gtol=-1.0)
    with pytest.raises(ValueError, match="lower <= upper, got lower 1.0 > upper 0.0"):
        gradtx.minimize(rosen, jnp.zeros(2), bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="bounds must be a pair"):
        gradtx.minimize(rosen, jnp.zeros(2), bounds=(0.0,))


@pytest.mark.parametrize(("lower", "upper"), [(1.2, 3.0), (1.1, 1.5), (-3.0, -0.5), (0.0, 0.9)])
def test_bounded_random_starts_match_scipy(x64, lower, upper):
    """Starts inside and outside the box (clipped into it); the lower bounds are active at the
    solution for the first two boxes, the upper ones for the others. A variable a hair inside
    its bound must not stall the projected line search (the solve must reach scipy's point, not
    stop on a failed search)."""
    for seed in range(6):
        x0 = np.random.default_rng(seed).uniform(-2, 2, 10)
        ref = _scipy(rosen, x0, (), bounds=(lower, upper))
        res = gradtx.minimize(rosen, jnp.asarray(x0), bounds=(lower, upper))
        assert bool(res.success) and ref.success, (seed, res.message, ref.message)
        assert _rel(res.x, ref.x) <= 1e-5, (seed, _rel(res.x, ref.x))
        np.testing.assert_allclose(float(res.fun), ref.fun, rtol=1e-8)
        assert np.all(np.asarray(res.x) >= lower) and np.all(np.asarray(res.x) <= upper)
        at_lo, at_hi = np.isclose(ref.x, lower), np.isclose(ref.x, upper)
        assert (at_lo if lower > 1 else at_hi).any()
        np.testing.assert_array_equal(np.isclose(res.x, lower), at_lo)
        np.testing.assert_array_equal(np.isclose(res.x, upper), at_hi)


def test_args_not_a_tuple_is_one_argument(x64):
    """As in SciPy: a non-tuple ``args`` is passed whole (not split into rows)."""

    def f(x, c):
        return jnp.sum((x - c) ** 2)

    res = gradtx.minimize(f, jnp.zeros(3), jnp.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(np.asarray(res.x), [1.0, 2.0, 3.0], rtol=1e-6)
    res = gradtx.minimize(f, jnp.zeros(3), 2.0)
    ref = scipy.optimize.minimize(
        lambda x, c: (np.sum((x - c) ** 2), 2 * (x - c)), np.zeros(3), 2.0, jac=True
    )
    np.testing.assert_allclose(np.asarray(res.x), ref.x, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(res.x), 2.0, rtol=1e-6)
    res = gradtx.minimize(f, jnp.zeros(3), (4.0,))
    np.testing.assert_allclose(np.asarray(res.x), 4.0, rtol=1e-6)


def test_scalar_array_and_pytree_bounds_share_one_compilation(x64):
    x0 = jnp.zeros(5)
    lo5 = jnp.full(5, -1.0)
    gradtx.minimize(rosen, x0, bounds=(-1.0, 0.5))
    with count_compilations() as c:
        a = gradtx.minimize(rosen, x0, bounds=(np.full(5, -1.0), np.full(5, 0.5)))
        b = gradtx.minimize(rosen, x0, bounds=(lo5, 0.5))
        gradtx.minimize(rosen, x0, bounds=(None, 0.5))
        gradtx.minimize(rosen, x0, bounds=([-1.0] * 5, None))
    assert c["n"] == 0
    ref = _scipy(rosen, np.zeros(5), (), bounds=(-1.0, 0.5))
    assert _rel(a.x, ref.x) <= 1e-5 and _rel(b.x, ref.x) <= 1e-5


def test_traced_bounds_under_vmap_match_scipy(x64):
    """Bounds may be traced (vmap over the box): each solve matches scipy on its own box."""
    uppers = jnp.array([0.5, 0.8, 2.0])
    solve = jax.jit(jax.vmap(lambda u: gradtx.minimize(rosen, jnp.zeros(5), bounds=(-1.0, u))))
    res = solve(uppers)
    for i, u in enumerate([0.5, 0.8, 2.0]):
        ref = _scipy(rosen, np.zeros(5), (), bounds=(-1.0, u))
        assert _rel(res.x[i], ref.x) <= 1e-5, (u, _rel(res.x[i], ref.x))
    assert np.asarray(res.success).all()


def test_concrete_zero_d_array_settings_are_accepted(x64):
    a = gradtx.minimize(rosen, jnp.zeros(4), gtol=jnp.array(1e-3), maxiter=jnp.array(50))
    b = gradtx.minimize(rosen, jnp.zeros(4), gtol=1e-3, maxiter=50)
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    assert float(a.grad_norm) <= 1e-3 and a.nfev == b.nfev
    ref = _scipy(rosen, np.zeros(4), (), gtol=1e-3)
    assert _rel(a.x, ref.x) <= 1e-2


def test_traced_setting_is_a_clear_error(x64):
    with pytest.raises(TypeError, match="gtol must be concrete"):
        jax.jit(lambda g: gradtx.minimize(rosen, jnp.zeros(2), gtol=g).x)(1e-3)


def test_list_x0_is_a_pytree_of_scalars(x64):
    res = gradtx.minimize(lambda p: (p[0] - 1.0) ** 2 + (p[1] + 2.0) ** 2, [0.0, 0.0])
    assert isinstance(res.x, list) and len(res.x) == 2
    np.testing.assert_allclose([float(v) for v in res.x], [1.0, -2.0], rtol=1e-6)


def test_x0_outside_the_box_is_clipped_like_scipy(x64):
    x0 = np.array([3.0, -3.0, 0.2])
    res = gradtx.minimize(rosen, jnp.asarray(x0), bounds=(-1.0, 0.5), maxiter=0)
    np.testing.assert_array_equal(np.asarray(res.x), [0.5, -1.0, 0.2])
    assert float(res.fun) == pytest.approx(scipy.optimize.rosen(np.array([0.5, -1.0, 0.2])))
    res = gradtx.minimize(rosen, jnp.asarray(x0), bounds=(-1.0, 0.5))
    ref = _scipy(rosen, x0, (), bounds=(-1.0, 0.5))
    assert bool(res.success) and _rel(res.x, ref.x) <= 1e-5


def test_more_bad_arguments(x64):
    x0 = jnp.zeros(2)
    with pytest.raises(TypeError, match="fun must be callable, got 3"):
        gradtx.minimize(3, x0)
    with pytest.raises(ValueError, match="method must be 'lbfgs', got 'newton'"):
        gradtx.minimize(rosen, x0, method="newton")
    with pytest.raises(ValueError, match="maxfev must be an int in"):
        gradtx.minimize(rosen, x0, maxfev=-5)
    with pytest.raises(ValueError, match="bounds lower must not be NaN, got nan at flat index 1"):
        gradtx.minimize(rosen, x0, bounds=(np.array([0.0, np.nan]), 1.0))
    with pytest.raises(ValueError, match="bounds upper must not be NaN"):
        gradtx.minimize(rosen, x0, bounds=(None, float("nan")))
    with pytest.raises(
        ValueError, match=r"lower <= upper, got lower 2.0 > upper 1.0 at flat index 1"
    ):
        gradtx.minimize(rosen, x0, bounds=(np.array([0.0, 2.0]), 1.0))
    with pytest.raises(TypeError, match="x0 leaves must be real floating, got a complex64"):
        gradtx.minimize(lambda z: jnp.sum(jnp.abs(z) ** 2), jnp.zeros(2, jnp.complex64))
    with pytest.raises(TypeError, match="x0 leaves must be real floating, got a complex128"):
        gradtx.minimize(lambda p: jnp.sum(jnp.abs(p["a"]) ** 2), {"a": np.zeros(2, complex)})
    with pytest.raises(
        TypeError, match=r"fun must return a real floating scalar, got shape \(2,\)"
    ):
        gradtx.minimize(lambda x: x**2, x0)
    with pytest.raises(TypeError, match="bounds lower must be real numbers"):
        gradtx.minimize(rosen, x0, bounds=("a", 1.0))


def test_counts_stay_exact_for_bfloat16_x0():
    """Counts above 256 are not representable in bfloat16: they must not travel in x's dtype.
    On -x the first search doubles the step to the overflow, the second exhausts maxls=301
    (the same evaluations in float32, whose counts are exact, and bfloat16)."""

    def f(x):
        return -jnp.sum(x)

    kw = dict(maxiter=50, gtol=0.0, ftol=0.0, maxls=301)
    ref = gradtx.minimize(f, jnp.zeros(1, jnp.float32), **kw)
    assert ref.nfev > 301 and ref.nfev % 2 == 1  # odd: not a bfloat16 integer above 256
    res = gradtx.minimize(f, jnp.zeros(1, jnp.bfloat16), **kw)
    assert (res.nit, res.nfev, res.status) == (ref.nit, ref.nfev, ref.status)
    traced = jax.jit(lambda x0: gradtx.minimize(f, x0, **kw))(jnp.zeros(1, jnp.bfloat16))
    assert int(traced.nfev) == ref.nfev and traced.nfev.dtype == jnp.int32


def test_solver_cache_is_keyed_by_function_identity(x64):
    """A new lambda per call compiles again; the same function object does not."""
    x0, A, A2, b = jnp.zeros(3), jnp.eye(3), 2 * jnp.eye(3), jnp.ones(3)
    gradtx.minimize(quadratic, x0, (A, b), maxiter=3)
    with count_compilations() as c:
        res = gradtx.minimize(quadratic, x0, (A2, b))
    assert c["n"] == 0
    np.testing.assert_allclose(np.asarray(res.x), 0.5, rtol=1e-8)  # A2 x = b
    with count_compilations() as c:
        gradtx.minimize(lambda x, A, b: quadratic(x, A, b), x0, (A, b))
    assert c["n"] >= 1


def test_projected_gradient_norm_is_free_of_rounding_in_float32():
    """Far from 0 in float32, ``x - g`` rounds to ``x`` for a small ``g``: the projected gradient
    must not then read 0 (a false convergence). Checked against float64 NumPy."""
    res = gradtx.minimize(lambda x: -jnp.sum(jnp.log(x)), jnp.ones(2), bounds=(0.0, None))
    x, g = np.asarray(res.x, np.float64), np.asarray(res.grad, np.float64)
    pg = np.max(np.abs(np.clip(x - g, 0.0, np.inf) - x))
    assert float(res.grad_norm) == pytest.approx(pg, rel=1e-6)
    assert bool(res.success) and pg <= 1e-5, (res.message, pg, x)


def test_failed_search_keeps_a_finite_x_matching_fun():
    """-log x has no minimiser: the iterates grow until float32 runs out (the gradient drops
    below the smallest normal float32, which XLA on CPU flushes to 0, or the curvature pairs
    overflow); the result's x must still be the finite point whose value and gradient are
    reported."""
    res = gradtx.minimize(lambda x: -jnp.sum(jnp.log(x)), jnp.ones(1), gtol=0.0, ftol=0.0)
    x = np.asarray(res.x, np.float64)
    assert np.isfinite(x).all(), (res.message, x)
    assert float(res.fun) == pytest.approx(-np.log(x[0]), rel=1e-6)
    tiny = float(np.finfo(np.float32).tiny)  # a subnormal gradient may read as 0
    np.testing.assert_allclose(np.asarray(res.grad), -1.0 / x, rtol=1e-5, atol=tiny)
