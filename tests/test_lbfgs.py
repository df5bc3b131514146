"""scale_by_lbfgs and the lbfgs optimizer: against a float64 NumPy two-loop/BFGS reference, against
optax (same iterates where the algorithms coincide), and against gradtx.minimize."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx


def _rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _np_direction(g, pairs, scale_init=True):
    """H g with H from the BFGS inverse update over ``pairs`` (oldest first), starting at γI.

    Written from the matrix formula H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ, not the two loops.
    """
    n = g.size
    if pairs:
        s, y = pairs[-1]
        gamma = (s @ y) / (y @ y) if scale_init else 1.0
    else:
        gamma = min(1.0, 1.0 / np.linalg.norm(g)) if scale_init else 1.0
    H = gamma * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        V = np.eye(n) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    return H @ g


def _quadratic(n, seed):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    A = M @ M.T + n * np.eye(n)
    b = rng.normal(size=n)
    return A, b


@pytest.mark.parametrize("memory_size", [1, 3, 10])
@pytest.mark.parametrize("scale_init", [True, False])
def test_direction_matches_numpy_bfgs_formula(x64, memory_size, scale_init):
    A, b = _quadratic(6, 0)
    rng = np.random.default_rng(1)
    tx = gradtx.scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init)
    update = jax.jit(tx.update)
    xs = [rng.normal(size=6) for _ in range(12)]  # arbitrary points: pairs s·y > 0 (A is SPD)
    state = tx.init(jnp.zeros(6))
    pairs = []
    for k, x in enumerate(xs):
        g = A @ x - b
        d, state = update(jnp.asarray(g), state, jnp.asarray(x))
        if k > 0:
            pairs.append((x - xs[k - 1], g - (A @ xs[k - 1] - b)))
        ref = _np_direction(g, pairs[-memory_size:], scale_init)
        np.testing.assert_allclose(np.asarray(d), ref, rtol=1e-10, atol=1e-12)
    # pairs written, less a multiple of m once it reaches 2m (so it never overflows)
    written = len(xs) - 1
    want = written if written < 2 * memory_size else memory_size + written % memory_size
    assert int(state.num_pairs) == want


def test_matches_optax_scale_by_lbfgs_on_a_pytree(x64):
    A, b = _quadratic(7, 2)
    rng = np.random.default_rng(3)

    def split(v):
        return {"w": v[:4].reshape(2, 2), "b": v[4:]}

    ours = gradtx.scale_by_lbfgs(memory_size=3)
    theirs = optax.scale_by_lbfgs(memory_size=3)
    s_ours, s_theirs = ours.init(split(jnp.zeros(7))), theirs.init(split(jnp.zeros(7)))
    up_ours, up_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    for _ in range(9):
        x = rng.normal(size=7)
        g = split(jnp.asarray(A @ x - b))
        p = split(jnp.asarray(x))
        d_ours, s_ours = up_ours(g, s_ours, p)
        d_theirs, s_theirs = up_theirs(g, s_theirs, p)
        jax.tree_util.tree_map(
            lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-13),
            d_ours,
            d_theirs,
        )


def test_pair_with_negative_curvature_is_kept_like_optax(x64):
    """Every step's pair enters the memory, as in optax: one with <s, y> < 0 (H indefinite),
    and one with s = y = 0 (a step of 0, which stores ρ = 0 and resets γ to 1)."""
    A, b = _quadratic(5, 4)
    rng = np.random.default_rng(5)
    ours, theirs = gradtx.scale_by_lbfgs(memory_size=4), optax.scale_by_lbfgs(memory_size=4)
    s_ours, s_theirs = ours.init(jnp.zeros(5)), theirs.init(jnp.zeros(5))
    x0, x1 = rng.normal(size=5), rng.normal(size=5)
    g0, g1 = A @ x0 - b, A @ x1 - b
    # A gradient that makes <s, y> < 0 for the third pair.
    x2 = x1 + 0.1 * rng.normal(size=5)
    g2 = g1 - 3.0 * (x2 - x1)
    assert (x2 - x1) @ (g2 - g1) < 0
    pairs = [(x1 - x0, g1 - g0), (x2 - x1, g2 - g1)]
    refs = [None, _np_direction(g1, pairs[:1]), _np_direction(g2, pairs)]
    # The same point again: s = y = 0, a no-op pair; H_4 = the pairs above from γ = 1.
    refs.append(_np_direction(g2, pairs, scale_init=False))
    for k, (x, g) in enumerate([(x0, g0), (x1, g1), (x2, g2), (x2, g2)]):
        d, s_ours = ours.update(jnp.asarray(g), s_ours, jnp.asarray(x))
        d_theirs, s_theirs = theirs.update(jnp.asarray(g), s_theirs, jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(d), np.asarray(d_theirs), rtol=1e-10, atol=1e-13)
        if refs[k] is not None:
            np.testing.assert_allclose(np.asarray(d), refs[k], rtol=1e-10, atol=1e-13)
    assert int(s_ours.num_pairs) == 3
    np.testing.assert_allclose(np.asarray(s_ours.weights_memory)[:3], [
        1.0 / (pairs[0][0] @ pairs[0][1]), 1.0 / (pairs[1][0] @ pairs[1][1]), 0.0
    ], rtol=1e-12)  # fmt: skip


def _np_himmelblau_grad(x):
    a, b = x[0] ** 2 + x[1] - 11.0, x[0] + x[1] ** 2 - 7.0
    return np.array([4.0 * x[0] * a + 2.0 * b, 2.0 * a + 4.0 * x[1] * b])


# Himmelblau's four minimisers (f = 0), to 6 decimals.
_HIMMELBLAU_MINIMA = np.array(
    [[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126]]
)


def test_without_linesearch_matches_optax_on_himmelblau(x64):
    """lbfgs(linesearch=None): x ← x − α H_k ∇f, with every step's pair stored (negative
    curvature included) as optax does. From these starts the iterates pass through regions of
    negative curvature (checked below in NumPy) and still converge to a minimiser, exactly as
    optax's do."""

    def f(x):
        return (x[0] ** 2 + x[1] - 11.0) ** 2 + (x[0] + x[1] ** 2 - 7.0) ** 2

    def run(opt, x0):
        def step(x_state, _):
            x, state = x_state
            v, g = jax.value_and_grad(f)(x)
            u, state = opt.update(g, state, x, value=v, grad=g, value_fn=f)
            return (x + u, state), x + u

        return np.asarray(jax.jit(lambda x: jax.lax.scan(step, (x, opt.init(x)), None, 600)[1])(x0))

    for start in [(-2.0, -2.0), (0.0, 3.0), (-3.0, -1.0), (0.0, -3.0)]:
        x0 = jnp.asarray(start)
        xs = run(gradtx.lbfgs(learning_rate=0.05, linesearch=None), x0)
        xs_optax = run(optax.lbfgs(learning_rate=0.05, linesearch=None), x0)
        np.testing.assert_allclose(xs, xs_optax, rtol=1e-5, atol=1e-8, err_msg=str(start))
        path = np.vstack([start, xs])
        grads = np.array([_np_himmelblau_grad(p) for p in path])
        sy = np.sum(np.diff(path, axis=0) * np.diff(grads, axis=0), axis=1)
        assert (sy < 0).any(), start  # a pair of negative curvature was stored
        assert np.linalg.norm(grads[-1]) < 1e-3, start
        nearest = np.min(np.linalg.norm(_HIMMELBLAU_MINIMA - xs[-1], axis=1))
        assert nearest < 1e-5, (start, xs[-1])


def _optax_style_loop(opt, f, x0, steps, *, gradtx_vg=True):
    vg = (gradtx if gradtx_vg else optax).value_and_grad_from_state(f)

    def step(carry, _):
        x, state = carry
        v, g = vg(x, state=state)
        u, state = opt.update(g, state, x, value=v, grad=g, value_fn=f)
        x = (gradtx if gradtx_vg else optax).apply_updates(x, u)
        return (x, state), x

    _, xs = jax.jit(lambda x: jax.lax.scan(step, (x, opt.init(x)), None, length=steps))(x0)
    return np.asarray(xs)


def test_same_iterates_as_optax_with_backtracking(x64):
    """Where the algorithms coincide (L-BFGS direction, Armijo backtracking), same iterates."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(40, 5))
    y = (rng.uniform(size=40) < 0.5).astype(float)

    def f(w):
        z = X @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z) + 0.05 * jnp.sum(w**2)

    x0 = jnp.asarray(rng.normal(size=5))
    ours = gradtx.lbfgs(
        memory_size=4,
        linesearch=gradtx.scale_by_backtracking_linesearch(15, store_grad=True),
    )
    theirs = optax.lbfgs(
        memory_size=4,
        linesearch=optax.scale_by_backtracking_linesearch(15, store_grad=True),
    )
    # 10 steps take it to the minimiser to ~1e-9; beyond that the Armijo test is decided by
    # rounding, and on failure gradtx takes no step where optax takes its last trial step.
    xs_ours = _optax_style_loop(ours, f, x0, 10)
    xs_theirs = _optax_style_loop(theirs, f, x0, 10, gradtx_vg=False)
    np.testing.assert_allclose(xs_ours, xs_theirs, rtol=1e-12, atol=1e-14)
    w_star = np.asarray(gradtx.minimize(f, x0, gtol=1e-12, ftol=0.0).x)
    np.testing.assert_allclose(xs_ours[-1], w_star, rtol=1e-7, atol=1e-8)


def _np_rosen(x):
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def _np_rosen_grad(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def _conditioned_quadratic(n, seed, cond):
    """``A = Q diag(eigenvalues from 1 to cond) Qᵀ`` with a random rotation ``Q``, and ``b``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return q @ np.diag(np.logspace(0.0, np.log10(cond), n)) @ q.T, rng.normal(size=n)


_Q_A, _Q_B = _conditioned_quadratic(20, 7, 100.0)  # L-BFGS needs ~50 iterations here


def _np_quad(x):
    return float(0.5 * x @ _Q_A @ x - _Q_B @ x)


def _np_quad_grad(x):
    return _Q_A @ x - _Q_B


_ZOOM_PROBLEMS = {
    "rosenbrock-2d": (_rosen, _np_rosen, _np_rosen_grad, np.array([-1.2, 1.0])),
    "rosenbrock-10d": (_rosen, _np_rosen, _np_rosen_grad, np.zeros(10)),
    "quadratic-20d": (
        lambda x: 0.5 * x @ (jnp.asarray(_Q_A) @ x) - jnp.asarray(_Q_B) @ x,
        _np_quad,
        _np_quad_grad,
        np.zeros(20),
    ),
}


def test_default_zoom_lbfgs_gives_optax_iterates(x64):
    """The optax L-BFGS notebook's loop (default zoom search, value_and_grad_from_state): the
    same iterates, step sizes and evaluation counts as optax for 50 iterations, every
    successful step meeting the strong Wolfe conditions (c1 = 1e-4, c2 = 0.9; checked in
    float64 NumPy; or Hager & Zhang's approximate decrease where f is flat to 1e-6 |f|), and
    the iterates reaching the minimiser. (On the quadratic every interpolant is exact, so any
    zoom rule gives these steps; the Rosenbrock problems tell the rules apart.)"""
    for problem in sorted(_ZOOM_PROBLEMS):
        _check_zoom_lbfgs_against_optax(problem)


def _check_zoom_lbfgs_against_optax(problem):
    f, np_f, np_grad, x0 = _ZOOM_PROBLEMS[problem]
    steps = 50

    def run(lib):
        opt = lib.lbfgs()
        vg = lib.value_and_grad_from_state(f)

        def step(carry, _):
            x, state = carry
            v, g = vg(x, state=state)
            u, state = opt.update(g, state, x, value=v, grad=g, value_fn=f)
            ls = state[-1]
            info = (ls.learning_rate, ls.info.num_linesearch_steps, getattr(ls.info, "status", 0))
            return (x + u, state), (x + u, *info)

        loop = jax.jit(lambda x: jax.lax.scan(step, (x, opt.init(x)), None, length=steps)[1])
        return jax.tree_util.tree_map(np.asarray, loop(jnp.asarray(x0)))

    xs, etas, evals, status = run(gradtx)
    xs_optax, etas_optax, evals_optax, _ = run(optax)
    np.testing.assert_allclose(xs, xs_optax, rtol=1e-7, atol=1e-10)
    # The searches agree while f is not flat to rounding (|∇f| > 1e-6; past that their
    # decisions compare values equal to the last bits, and once ∇f = 0 gradtx evaluates
    # nothing, NOT_DESCENT_DIRECTION, where optax evaluates once).
    path = np.vstack([x0, xs])
    live = np.array([np.abs(np_grad(x)).max() > 1e-6 for x in path[:-1]])
    assert live[:20].all()
    np.testing.assert_allclose(etas[live], etas_optax[live], rtol=1e-7)
    np.testing.assert_array_equal(evals[live], evals_optax[live])
    assert (status[:20] == gradtx.LinesearchStatus.SUCCESS).all()
    for k in np.flatnonzero(status == gradtx.LinesearchStatus.SUCCESS):
        x, x1, eta = path[k], path[k + 1], etas[k]
        d = (x1 - x) / eta
        s0, s1 = np_grad(x) @ d, np_grad(x1) @ d
        f0, f1 = np_f(x), np_f(x1)
        armijo = f1 <= f0 + 1e-4 * eta * s0 + 1e-12 * abs(f0)
        approx = f1 <= f0 + 1e-6 * abs(f0) and s1 <= (2e-4 - 1.0) * s0 + 1e-9 * abs(s0)
        assert s0 < 0 and (armijo or approx), (problem, k)
        assert abs(s1) <= 0.9 * abs(s0) * (1 + 1e-9) + 1e-12, (problem, k)
    if problem == "quadratic-20d":
        np.testing.assert_allclose(xs[-1], np.linalg.solve(_Q_A, _Q_B), atol=1e-4)
    elif problem == "rosenbrock-2d":
        np.testing.assert_allclose(xs[-1], [1.0, 1.0], atol=1e-10)
    else:
        assert np_f(xs[-1]) < 1e-3 < np_f(xs[29])


def test_user_loop_gives_the_iterates_of_minimize(x64):
    x0 = jnp.zeros(10)
    xs = _optax_style_loop(gradtx.lbfgs(), _rosen, x0, 30)
    for k in (1, 5, 30):
        res = gradtx.minimize(_rosen, x0, maxiter=k, gtol=0.0, ftol=0.0)
        assert int(res.nit) == k
        np.testing.assert_allclose(np.asarray(res.x), xs[k - 1], rtol=1e-12, atol=1e-14)


def test_user_loop_tracks_minimize_on_a_pytree_to_rounding(x64):
    """On a pytree x0 the dot products are summed leaf by leaf in a different order than
    minimize's flat vector, so the iterates agree to rounding, and Rosenbrock's curved valley
    amplifies that rounding: measured max |difference| 1e-13 after 10 iterations, 4e-6 after
    40, both ending at the minimiser."""

    def f(p):
        return _rosen(jnp.concatenate([p["a"], p["b"].ravel()]))

    p0 = {"a": jnp.zeros(2), "b": jnp.zeros((2, 4))}
    opt = gradtx.lbfgs()
    vg = gradtx.value_and_grad_from_state(f)

    def step(carry, _):
        p, state = carry
        v, g = vg(p, state=state)
        u, state = opt.update(g, state, p, value=v, grad=g, value_fn=f)
        p = gradtx.apply_updates(p, u)
        return (p, state), p

    run = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, length=80)[1])
    ps = jax.tree_util.tree_map(np.asarray, run(p0))
    for k, atol in ((1, 1e-12), (5, 1e-12), (10, 1e-11), (40, 1e-4)):
        res = gradtx.minimize(f, p0, maxiter=k, gtol=0.0, ftol=0.0)
        assert int(res.nit) == k
        for name in ("a", "b"):
            np.testing.assert_allclose(np.asarray(res.x[name]), ps[name][k - 1], atol=atol)
    # Both reach the minimiser (1, ..., 1).
    res = gradtx.minimize(f, p0, gtol=1e-10, ftol=0.0)
    for name in ("a", "b"):
        np.testing.assert_allclose(np.asarray(res.x[name]), 1.0, atol=1e-8)
        np.testing.assert_allclose(ps[name][-1], 1.0, atol=1e-8)


def test_user_loop_converges_on_a_pytree(x64):
    def f(p):
        return _rosen(jnp.concatenate([p["a"], p["b"].ravel()]))

    p0 = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}
    opt = gradtx.lbfgs()
    vg = gradtx.value_and_grad_from_state(f)

    @jax.jit
    def step(p, state):
        v, g = vg(p, state=state)
        u, state = opt.update(g, state, p, value=v, grad=g, value_fn=f)
        return gradtx.apply_updates(p, u), state

    p, state = p0, opt.init(p0)
    for _ in range(60):
        p, state = step(p, state)
    np.testing.assert_allclose(np.asarray(p["b"]), np.ones((2, 2)), atol=1e-6)


def test_hyperparameters_are_leaves_and_no_recompile(x64):
    from conftest import count_compilations

    @jax.jit
    def step(opt, x):
        v, g = jax.value_and_grad(_rosen)(x)
        u, _ = opt.update(g, opt.init(x), x, value=v, grad=g, value_fn=_rosen)
        return x + u

    x = jnp.zeros(4)
    step(gradtx.lbfgs(learning_rate=0.5), x)
    with count_compilations() as c:
        step(gradtx.lbfgs(learning_rate=0.25), x)
    assert c["n"] == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="memory_size must be an int >= 1, got 0"):
        gradtx.scale_by_lbfgs(memory_size=0)
    with pytest.raises(ValueError, match="scale_by_lbfgs: update needs params"):
        tx = gradtx.scale_by_lbfgs()
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_docstrings_state_the_algorithm_and_arguments():
    """STYLE.md: one line, the math, Args, a runnable example, the paper."""
    doc = gradtx.lbfgs.__doc__
    for arg in ("learning_rate", "memory_size", "scale_init_precond", "linesearch"):
        assert f"        {arg}:" in doc, arg
    assert "Args:" in doc and "Example:" in doc and "Liu & Nocedal" in doc
    doc = gradtx.scale_by_lbfgs.__doc__
    assert "Algorithm 7.4" in doc and "γ_k = <s_{k−1}, y_{k−1}> / <y_{k−1}, y_{k−1}>" in doc
    assert "α_i ← ρ_i <s_i, q>" in doc and "r ← r + (α_i − β) s_i" in doc
    assert "Liu & Nocedal" in doc
