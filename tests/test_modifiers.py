"""The composable modifiers of gradtx/transforms/modifiers.py against float64 NumPy written from
the papers (100 steps, rtol 1e-8 under x64) and against optax where optax has the method:

- cautious (Liang et al., arXiv:2411.16085) around AdamW, Lion and SGD with momentum; its sign
  convention on hand-made steps;
- MARS's corrected gradient (Yuan et al., arXiv:2411.10438) before AdamW (``mars_adamw``), Lion
  and SGD with momentum, clipping reached and not reached, a scheduled γ;
- SAM (Foret et al., arXiv:2010.01412) against optax.contrib.sam (transparent and opaque modes)
  and against the paper's Algorithm 1 on a quadratic; ``sync_period=1``, where optax differs;
- stochastic rounding: unbiased (binomial tolerance), always a neighbour, reproducible from the
  key; a bfloat16 run with bfloat16 state where nearest rounding stalls and it does not;
- DP-SGD's aggregation against optax (same key, noise included) and NumPy (noise-free), and the
  noise's statistics;
- split_real_and_imaginary: Adam on complex params as (real, imaginary) pairs against a float64
  NumPy Adam on the pairs, and against optax.contrib around Adam, Lion and SGD with momentum;
  extra arguments (MoMo's ``value=``) reach the inner optimizer, real trees pass through;
- the digits MLP to >= 95% test accuracy with cautious(adamw), mars_adamw and sam.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _digits import digits, init_mlp, logits, loss
from _stepping import assert_trees_close, run_library, run_numpy
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL, random_problem

import gradtx
from gradtx.transforms.modifiers import (
    DifferentiallyPrivateAggregateState,
    SAMState,
    SplitRealAndImaginaryArrays,
    SplitRealAndImaginaryState,
    apply_updates_stochastic,
    cautious,
    differentially_private_aggregate,
    dpsgd,
    mars_adamw,
    normalize,
    sam,
    scale_by_mars_correction,
    split_real_and_imaginary,
    stochastic_round,
)

STEPS = 100


# ----------------------------------------------------------------------------------------------
# Float64 NumPy references of the inner optimizers: each returns (init, increment) where
# increment(xs, gs, state, t) gives the parameter increments u (θ ← θ + u) at step t = 0, 1, ...


def _np_adamw(lr, b1, b2, eps, wd):
    # Loshchilov & Hutter 2019, Algorithm 2 (AdamW), lines 7-12.
    def init(xs):
        return {"m": [np.zeros_like(x) for x in xs], "v": [np.zeros_like(x) for x in xs]}

    def increment(xs, gs, s, t):
        k = t + 1
        m = [b1 * m + (1 - b1) * g for m, g in zip(s["m"], gs, strict=True)]
        v = [b2 * v + (1 - b2) * g * g for v, g in zip(s["v"], gs, strict=True)]
        us = [
            -lr * ((mi / (1 - b1**k)) / (np.sqrt(vi / (1 - b2**k)) + eps) + wd * x)
            for mi, vi, x in zip(m, v, xs, strict=True)
        ]
        return us, {"m": m, "v": v}

    return init, increment


def _np_lion(lr, b1, b2, wd):
    # Chen et al. 2023, Algorithm 2 (Lion): c = β1 m + (1 − β1) g; θ ← θ − η (sign c + λ θ);
    # m ← β2 m + (1 − β2) g.
    def init(xs):
        return {"m": [np.zeros_like(x) for x in xs]}

    def increment(xs, gs, s, t):
        us = [
            -lr * (np.sign(b1 * m + (1 - b1) * g) + wd * x)
            for m, g, x in zip(s["m"], gs, xs, strict=True)
        ]
        m = [b2 * m + (1 - b2) * g for m, g in zip(s["m"], gs, strict=True)]
        return us, {"m": m}

    return init, increment


def _np_sgd_momentum(lr, rho):
    # Heavy ball in trace form: m ← g + ρ m; θ ← θ − α m.
    def init(xs):
        return {"m": [np.zeros_like(x) for x in xs]}

    def increment(xs, gs, s, t):
        m = [g + rho * m for m, g in zip(s["m"], gs, strict=True)]
        return [-lr * mi for mi in m], {"m": m}

    return init, increment


INNER = {
    # name: (gradtx optimizer, NumPy reference)
    "adamw": (
        lambda: gradtx.adamw(0.05, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1),
        lambda: _np_adamw(0.05, 0.9, 0.99, 1e-8, 0.1),
    ),
    "lion": (
        lambda: gradtx.lion(0.01, b1=0.9, b2=0.99, weight_decay=0.05),
        lambda: _np_lion(0.01, 0.9, 0.99, 0.05),
    ),
    "sgd_momentum": (
        lambda: gradtx.sgd(0.02, momentum=0.9),
        lambda: _np_sgd_momentum(0.02, 0.9),
    ),
}


def _apply(xs, us):
    return [x + u for x, u in zip(xs, us, strict=True)]


# ----------------------------------------------------------------------------------------------
# Cautious.


def _np_cautious(inner, eps, seen):
    """Liang et al. 2024, Algorithm 1 (the PyTorch line) per parameter array, with the paper's
    update direction d = −u (gradtx adds its increments): φ = 1[d ⊙ g > 0] = 1[u ⊙ g < 0],
    u ← u ⊙ φ · n / (Σφ + ε)."""
    init, increment = inner

    def step(xs, gs, s, t, value):
        us, s = increment(xs, gs, s, t)
        out = []
        for u, g in zip(us, gs, strict=True):
            phi = (u * g < 0).astype(np.float64)
            seen["kept"] += int(phi.sum())
            seen["dropped"] += int(phi.size - phi.sum())
            out.append(u * phi * (phi.size / (phi.sum() + eps)))
        return _apply(xs, out), s

    return init, step


@pytest.mark.parametrize(
    "name, eps", [("adamw", 1e-8), ("lion", 1.0), ("sgd_momentum", 0.5)], ids=str
)
def test_cautious_matches_numpy_reference(x64, name, eps):
    make, ref = INNER[name]
    params, grad = random_problem(3)
    got = run_library(cautious(make(), eps=eps), params, grad, STEPS, jnp.float64)
    seen = {"kept": 0, "dropped": 0}
    init, step = _np_cautious(ref(), eps, seen)
    want = run_numpy(init, step, params, grad, STEPS)
    assert_trees_close(got, want, rtol=1e-8, atol=1e-12)
    # Both branches of the mask were taken many times.
    assert seen["kept"] > 100 and seen["dropped"] > 100, seen
    # ...and the mask changed the run: the plain optimizer ends elsewhere.
    plain = run_library(make(), params, grad, STEPS, jnp.float64)
    assert (
        max(
            np.max(np.abs(np.asarray(a) - np.asarray(b)))
            for a, b in zip(
                jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(got), strict=True
            )
        )
        > 1e-3
    )


def test_cautious_sign_convention():
    g = jnp.array([1.0, -2.0, 3.0, -4.0])
    p = jnp.zeros(4)
    # Descent everywhere (u = −α g, u ⊙ g < 0): every coordinate kept, factor n / (n + 0) = 1.
    opt = cautious(gradtx.sgd(0.1), eps=0.0)
    u, _ = opt.update(g, opt.init(p), p)
    np.testing.assert_allclose(np.asarray(u), -0.1 * np.asarray(g), rtol=1e-7)
    # Ascent everywhere (a negative learning rate: u = +α g goes uphill): everything dropped.
    opt = cautious(gradtx.sgd(-0.1))
    u, _ = opt.update(g, opt.init(p), p)
    assert np.asarray(u).tolist() == [0.0, 0.0, 0.0, 0.0]
    # Mixed, by hand: momentum from a first gradient of ones, then g2. m = g2 + 0.9 · 1,
    # u = −m. Coordinates 0 and 2 have g2 < 0 < m (u ⊙ g2 > 0: uphill), dropped; coordinate 3
    # has g2 = 0 (no descent), dropped; coordinate 1 kept, scaled by 4 / (1 + 1e-8).
    opt = cautious(gradtx.sgd(1.0, momentum=0.9))
    s = opt.init(p)
    _, s = opt.update(jnp.ones(4), s, p)
    g2 = jnp.array([-0.5, 2.0, -0.1, 0.0])
    u, s = opt.update(g2, s, p)
    np.testing.assert_allclose(np.asarray(u), [0.0, -2.9 * 4 / (1 + 1e-8), 0.0, 0.0], rtol=1e-6)
    # The state is the base optimizer's own.
    inner = gradtx.sgd(1.0, momentum=0.9)
    assert jax.tree_util.tree_structure(s) == jax.tree_util.tree_structure(inner.init(p))
    np.testing.assert_allclose(np.asarray(s[0].trace), np.asarray(g2) + 0.9, rtol=1e-7)


def test_cautious_per_array_rescaling_and_complex():
    # Each array is rescaled by its own count: a = (kept 1 of 2), b = (kept 3 of 3).
    opt = cautious(gradtx.sgd(1.0), eps=0.0)
    g = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([1.0, 2.0, 3.0])}
    u, _ = opt.update(g, opt.init(g), g)
    np.testing.assert_allclose(np.asarray(u["a"]), [-2.0, 0.0])
    np.testing.assert_allclose(np.asarray(u["b"]), [-1.0, -2.0, -3.0])
    # Complex: kept where Re(conj(u) g) < 0. With u = −g ⊙ w (a per-coordinate rotation w):
    # w = 1 (kept), w = −1 (dropped), w = i (Re = 0: dropped), w = e^{iπ/4} (kept).
    w = np.array([1.0, -1.0, 1j, np.exp(1j * np.pi / 4)])
    gc = jnp.asarray([1 + 1j, 2 - 1j, 0.5j, -1.0], jnp.complex64)
    tx = cautious(gradtx.stateless(lambda u, p: -u * jnp.asarray(w, jnp.complex64)), eps=0.0)
    out, _ = tx.update(gc, tx.init(gc))
    want = -np.asarray(gc) * w * np.array([1, 0, 0, 1]) * 2.0
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# MARS.


def _np_mars(inner, gamma_at, b1, tau, seen):
    """Yuan et al. 2024, Algorithm 1 lines 4-5 with the approximate gradient (the previous
    step's, g_0 = 0): c_t = g_t + γ_t β1/(1 − β1) (g_t − g_{t−1}); c̃_t = c_t / ‖c_t‖ · τ if
    ‖c_t‖ > τ (norm over all parameters); the inner optimizer then steps on c̃_t."""
    init_inner, increment = inner

    def init(xs):
        return {"inner": init_inner(xs), "prev": [np.zeros_like(x) for x in xs]}

    def step(xs, gs, s, t, value):
        gamma = gamma_at(t)
        c = [g + gamma * b1 / (1 - b1) * (g - p) for g, p in zip(gs, s["prev"], strict=True)]
        norm = np.sqrt(sum(np.sum(ci * ci) for ci in c))
        if tau is not None and norm > tau:
            c = [ci * tau / norm for ci in c]
            seen["clipped"] += 1
        else:
            seen["passed"] += 1
        us, si = increment(xs, c, s["inner"], t)
        return _apply(xs, us), {"inner": si, "prev": [g.copy() for g in gs]}

    return init, step


def test_mars_adamw_matches_numpy_reference(x64):
    # mars_adamw = MARS-AdamW (Algorithm 2): the correction then AdamW with the same β1.
    params, grad = random_problem(4)
    opt = mars_adamw(
        0.02, b1=0.9, b2=0.99, eps=1e-8, gamma=0.3, clip_threshold=6.5, weight_decay=0.1
    )
    got = run_library(opt, params, grad, STEPS, jnp.float64)
    seen = {"clipped": 0, "passed": 0}
    init, step = _np_mars(_np_adamw(0.02, 0.9, 0.99, 1e-8, 0.1), lambda t: 0.3, 0.9, 6.5, seen)
    want = run_numpy(init, step, params, grad, STEPS)
    assert_trees_close(got, want, rtol=1e-8, atol=1e-12)
    assert seen["clipped"] > 5 and seen["passed"] > 5, seen


@pytest.mark.parametrize("name", ["lion", "sgd_momentum"])
def test_mars_correction_before_other_optimizers(x64, name):
    # A scheduled γ (evaluated at the count before the step) and clipping off (lion) or on.
    make, ref = INNER[name]
    tau = None if name == "lion" else 5.0
    b1 = 0.8
    params, grad = random_problem(5)
    opt = gradtx.chain(
        scale_by_mars_correction(lambda c: 0.1 + 0.01 * c, b1=b1, clip_threshold=tau), make()
    )
    got = run_library(opt, params, grad, STEPS, jnp.float64)
    seen = {"clipped": 0, "passed": 0}
    init, step = _np_mars(ref(), lambda t: 0.1 + 0.01 * t, b1, tau, seen)
    want = run_numpy(init, step, params, grad, STEPS)
    assert_trees_close(got, want, rtol=1e-8, atol=1e-12)
    if tau is not None:
        assert seen["clipped"] > 5 and seen["passed"] > 5, seen


def test_mars_correction_first_steps_by_hand():
    tx = scale_by_mars_correction(gamma=0.1, b1=0.5, clip_threshold=None)
    s = tx.init({"w": jnp.zeros(2)})
    # g_0 = 0: c_1 = (1 + 0.1 · 1) g_1.
    c, s = tx.update({"w": jnp.array([1.0, -2.0])}, s)
    np.testing.assert_allclose(np.asarray(c["w"]), [1.1, -2.2], rtol=1e-7)
    c, s = tx.update({"w": jnp.array([3.0, 0.0])}, s)
    np.testing.assert_allclose(np.asarray(c["w"]), [3.0 + 0.1 * 2.0, 0.0 + 0.1 * 2.0], rtol=1e-7)
    np.testing.assert_allclose(np.asarray(s.last_grad["w"]), [3.0, 0.0])
    assert int(s.count) == 2
    # Clipping at τ = 1 on the global norm: (3, 4) → (0.6, 0.8); (0.3, 0.4) passes.
    tx = scale_by_mars_correction(gamma=0.0, clip_threshold=1.0)
    s = tx.init({"a": jnp.zeros(1), "b": jnp.zeros(1)})
    c, s = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, s)
    np.testing.assert_allclose([float(c["a"][0]), float(c["b"][0])], [0.6, 0.8], rtol=1e-6)
    c, s = tx.update({"a": jnp.array([0.3]), "b": jnp.array([0.4])}, s)
    np.testing.assert_allclose([float(c["a"][0]), float(c["b"][0])], [0.3, 0.4], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# SAM.


def _quadratic(seed=0, n=6, distance=10.0):
    # Started far from the minimiser: near it SAM's step direction g/‖g‖ turns with every
    # rounding error, and two correct implementations part ways (the comparisons stay away).
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = q @ np.diag(np.logspace(0, 1, n)) @ q.T
    w_star = rng.normal(size=n)
    w0 = w_star + distance * rng.normal(size=n) / np.sqrt(n)
    return a, w_star, w0


def _split(w):
    return {"w": w[:4].reshape(2, 2), "b": w[4:]}


def _join(p):
    return np.concatenate([np.asarray(p["w"], np.float64).reshape(-1), np.asarray(p["b"])])


def _quadratic_grad(a, w_star, lib):
    a_j, ws_j = jnp.asarray(a), jnp.asarray(w_star)

    def grad(p):
        w = jnp.concatenate([p["w"].reshape(-1), p["b"]])
        d = a_j.astype(w.dtype) @ (w - ws_j.astype(w.dtype))
        return {"w": d[:4].reshape(2, 2), "b": d[4:]}

    return grad


def _run_sam(opt, params, grad, calls, apply, opaque=False):
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        g = grad(params)
        extra = {"grad_fn": lambda p, i: grad(p)} if opaque else {}
        u, state = opt.update(g, state, params, **extra)
        return apply(params, u), state

    path = []
    for _ in range(calls):
        params, state = step(params, state)
        path.append(_join(params))
    return np.array(path), state


SAM_CASES = {
    # name: (gradtx sam, optax sam, opaque)
    "sgd_sync2": (
        lambda: sam(gradtx.sgd(0.05), gradtx.chain(normalize(), gradtx.sgd(0.1))),
        lambda: optax.contrib.sam(
            optax.sgd(0.05), optax.chain(optax.contrib.normalize(), optax.sgd(0.1))
        ),
        False,
    ),
    "adam_sync3_keep_adv_state": (
        lambda: sam(
            gradtx.adam(0.2),
            gradtx.chain(normalize(), gradtx.sgd(0.05, momentum=0.5)),
            sync_period=3,
            reset_state=False,
        ),
        lambda: optax.contrib.sam(
            optax.adam(0.2),
            optax.chain(optax.contrib.normalize(), optax.sgd(0.05, momentum=0.5)),
            sync_period=3,
            reset_state=False,
        ),
        False,
    ),
    "opaque_adam_sync3": (
        lambda: sam(
            gradtx.adam(0.2),
            gradtx.chain(normalize(), gradtx.sgd(0.05, momentum=0.5)),
            sync_period=3,
            opaque_mode=True,
        ),
        lambda: optax.contrib.sam(
            optax.adam(0.2),
            optax.chain(optax.contrib.normalize(), optax.sgd(0.05, momentum=0.5)),
            sync_period=3,
            opaque_mode=True,
        ),
        True,
    ),
}


@pytest.mark.parametrize("name", list(SAM_CASES))
def test_sam_matches_optax(name):
    make, make_optax, opaque = SAM_CASES[name]
    a, w_star, w0 = _quadratic(1)
    grad = _quadratic_grad(a, w_star, "jax")
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), _split(w0))
    got, state = _run_sam(make(), params, grad, 60, gradtx.apply_updates, opaque)
    want, _ = _run_sam(make_optax(), params, grad, 60, optax.apply_updates, opaque)
    np.testing.assert_allclose(got, want, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert isinstance(state, SAMState)
    # It went downhill overall and the path was not a plain descent (ascent calls happened).
    f = [0.5 * (w - w_star) @ a @ (w - w_star) for w in got]
    assert f[-1] < 0.5 * f[0]
    if not opaque:
        assert any(f1 > f0 for f0, f1 in zip(f, f[1:], strict=False))


def test_sam_matches_paper_algorithm_on_a_quadratic(x64):
    # Foret et al. 2021, Algorithm 1 (p = 2, one ascent step): ε̂ = ρ g / ‖g‖;
    # w ← w − η ∇L(w + ε̂), for 100 outer steps (200 calls of the transparent mode).
    a, w_star, w0 = _quadratic(2)
    lr, rho = 0.01, 0.1
    w = w0.copy()
    ref = []
    for _ in range(STEPS):
        g = a @ (w - w_star)
        e = rho * g / np.linalg.norm(g)
        w = w - lr * (a @ (w + e - w_star))
        ref.append(w.copy())
    grad = _quadratic_grad(a, w_star, "jax")
    params = jax.tree_util.tree_map(jnp.asarray, _split(w0))
    opt = sam(gradtx.sgd(lr), gradtx.chain(normalize(), gradtx.sgd(rho)))
    path, _ = _run_sam(opt, params, grad, 2 * STEPS, gradtx.apply_updates)
    np.testing.assert_allclose(path[1::2], np.array(ref), rtol=1e-8, atol=1e-12)
    # The adversarial calls land on w + ε̂.
    g0 = a @ (w0 - w_star)
    np.testing.assert_allclose(path[0], w0 + rho * g0 / np.linalg.norm(g0), rtol=1e-10)
    # The opaque mode takes the same outer steps in one call each.
    opt = sam(gradtx.sgd(lr), gradtx.chain(normalize(), gradtx.sgd(rho)), opaque_mode=True)
    path, _ = _run_sam(opt, params, grad, STEPS, gradtx.apply_updates, opaque=True)
    np.testing.assert_allclose(path, np.array(ref), rtol=1e-8, atol=1e-12)


def test_sam_sync_period_one_is_the_optimizer_unlike_optax():
    a, w_star, w0 = _quadratic(3)
    grad = _quadratic_grad(a, w_star, "jax")
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), _split(w0))
    adv = gradtx.chain(normalize(), gradtx.sgd(0.1))
    got, _ = _run_sam(sam(gradtx.sgd(0.05), adv, 1), params, grad, 10, gradtx.apply_updates)
    plain, _ = _run_sam(gradtx.sgd(0.05), params, grad, 10, gradtx.apply_updates)
    np.testing.assert_allclose(got, plain, rtol=1e-6, atol=1e-7)
    # optax.contrib.sam moves from the previous call's parameters there (it undoes each step).
    adv_o = optax.chain(optax.contrib.normalize(), optax.sgd(0.1))
    theirs, _ = _run_sam(
        optax.contrib.sam(optax.sgd(0.05), adv_o, 1), params, grad, 10, optax.apply_updates
    )
    assert np.max(np.abs(theirs - plain)) > 1e-2


def test_sam_errors_and_normalize():
    with pytest.raises(ValueError, match=r"sam: sync_period must be in \[1, inf\], got 0"):
        sam(gradtx.sgd(0.1), gradtx.sgd(0.1), sync_period=0)
    opt = sam(gradtx.sgd(0.1), gradtx.sgd(0.1), opaque_mode=True)
    p = jnp.ones(2)
    with pytest.raises(ValueError, match="sam: opaque_mode=True needs .*grad_fn"):
        opt.update(p, opt.init(p), p)
    opt = sam(gradtx.sgd(0.1), gradtx.sgd(0.1))
    with pytest.raises(ValueError, match="sam: update needs params"):
        opt.update(p, opt.init(p))
    # normalize: u / ‖u‖ over all leaves (optax's), and zero stays zero (optax: NaN).
    g = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([2.0])}
    u, _ = normalize().update(g, normalize().init(g))
    v, _ = optax.contrib.normalize().update(g, optax.contrib.normalize().init(g))
    for k in g:
        np.testing.assert_allclose(np.asarray(u[k]), np.asarray(g[k]) / 3.0, rtol=1e-7)
        np.testing.assert_allclose(np.asarray(u[k]), np.asarray(v[k]), rtol=1e-7)
    zero = {"a": jnp.zeros(2)}
    assert np.asarray(normalize().update(zero, ())[0]["a"]).tolist() == [0.0, 0.0]
    nan, _ = optax.contrib.normalize().update(zero, ())
    assert np.isnan(np.asarray(nan["a"])).all()


# ----------------------------------------------------------------------------------------------
# Stochastic rounding.


def _neighbours(dtype, x):
    """The representable values of ``dtype`` just below and above float64 ``x`` (NumPy)."""
    lo = np.asarray(jnp.asarray(x, jnp.float32).astype(dtype).astype(jnp.float32), np.float64)
    lo = np.where(
        lo > x,
        np.asarray(
            jnp.nextafter(jnp.asarray(lo, dtype), -jnp.inf * jnp.ones((), dtype)), np.float64
        ),
        lo,
    )
    hi = np.asarray(
        jnp.nextafter(jnp.asarray(lo, dtype), jnp.inf * jnp.ones((), dtype)), np.float64
    )
    return lo, hi


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_stochastic_round_is_unbiased_and_a_neighbour(dtype):
    dt = jnp.dtype(dtype)
    n = 200_000
    # Values at several scales and signs, at fractions f of the way from lo to hi.
    for base in [1.0, -3.0, 0.0123, 300.0]:
        lo0 = float(jnp.asarray(base, dt).astype(jnp.float32))
        hi0 = float(
            jnp.nextafter(jnp.asarray(lo0, dt), jnp.asarray(jnp.inf, dt)).astype(jnp.float32)
        )
        for f in [0.1, 0.25, 0.5, 0.83]:
            x = np.float32(lo0 + f * (hi0 - lo0))
            xf = float(x)
            r = stochastic_round(jnp.full(n, x), dt, jax.random.key(7))
            assert r.dtype == dt
            rv = np.asarray(r.astype(jnp.float32), np.float64)
            assert set(np.unique(rv).tolist()) <= {lo0, hi0}, (base, f)
            # E[round(x)] = x: the count of "hi" is Binomial(n, p), p = (x − lo)/(hi − lo).
            p = (xf - lo0) / (hi0 - lo0)
            sd = abs(hi0 - lo0) * np.sqrt(p * (1 - p) / n)
            assert abs(rv.mean() - xf) < 5 * sd, (base, f, rv.mean(), xf, sd)
    # Representable values, inf and NaN come back unchanged; zero stays zero.
    special = jnp.array([1.0, -2.5, 0.0, jnp.inf, -jnp.inf, jnp.nan], jnp.float32)
    r = np.asarray(stochastic_round(special, dt, 0).astype(jnp.float32))
    np.testing.assert_array_equal(r[:5], np.asarray(special)[:5])
    assert np.isnan(r[5])


def test_stochastic_round_float64_to_float32_and_complex(x64):
    n = 100_000
    lo = 1.0
    hi = float(np.nextafter(np.float32(1.0), np.float32(2.0)))
    x = lo + 0.3 * (hi - lo)
    r = np.asarray(stochastic_round(jnp.full(n, x, jnp.float64), jnp.float32, 1), np.float64)
    assert set(np.unique(r).tolist()) <= {lo, hi}
    assert abs(r.mean() - x) < 5 * (hi - lo) * np.sqrt(0.21 / n)
    # Complex: real and imaginary parts rounded on their own.
    z = jnp.full(n, x + 1j * (2 * x), jnp.complex128)
    rz = np.asarray(stochastic_round(z, jnp.complex64, 2), np.complex128)
    assert abs(rz.real.mean() - x) < 5 * (hi - lo) * np.sqrt(0.21 / n)
    assert abs(rz.imag.mean() - 2 * x) < 5 * 2 * (hi - lo) * np.sqrt(0.21 / n)
    assert not np.array_equal(rz.real, rz.imag / 2)  # independent draws


def test_stochastic_round_reproducible_from_the_key():
    x = jnp.linspace(1.0, 2.0, 1000, dtype=jnp.float32) + 1e-3
    a = stochastic_round(x, jnp.bfloat16, jax.random.key(3))
    b = stochastic_round(x, jnp.bfloat16, jax.random.key(3))
    c = stochastic_round(x, jnp.bfloat16, jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    assert np.any(np.asarray(a, np.float32) != np.asarray(c, np.float32))
    # An int seed and a raw uint32[2] key are the same key.
    d = stochastic_round(x, jnp.bfloat16, 3)
    e = stochastic_round(x, jnp.bfloat16, jax.random.key_data(jax.random.key(3)))
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(d, np.float32))
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(e, np.float32))
    with pytest.raises(TypeError, match="stochastic_round: dtype must be a floating"):
        stochastic_round(x, jnp.int32, 0)
    with pytest.raises(TypeError, match="stochastic_round: x must be a floating"):
        stochastic_round(jnp.arange(3), jnp.bfloat16, 0)


def test_apply_updates_stochastic_leaves():
    key = jax.random.key(0)
    # float32 params with float32 updates: exactly apply_updates.
    p = {"a": jnp.linspace(-1, 1, 7, dtype=jnp.float32), "none": None}
    u = {"a": jnp.full(7, 1e-3, jnp.float32), "none": None}
    got = apply_updates_stochastic(p, u, key)
    assert got["none"] is None
    np.testing.assert_array_equal(np.asarray(got["a"]), np.asarray(gradtx.apply_updates(p, u)["a"]))
    # bfloat16 params: every entry is one of the two neighbours of the exact sum, dtype kept.
    pb = jnp.asarray(np.random.default_rng(0).normal(size=5000), jnp.bfloat16)
    ub = jnp.asarray(np.random.default_rng(1).normal(size=5000) * 1e-3, jnp.float32)
    exact = np.asarray(pb, np.float64) + np.asarray(ub, np.float64)
    out = apply_updates_stochastic(pb, ub, key)
    assert out.dtype == jnp.bfloat16
    lo, hi = _neighbours(jnp.bfloat16, np.asarray(jnp.asarray(exact, jnp.float32), np.float64))
    ov = np.asarray(out, np.float64)
    assert np.all((ov == lo) | (ov == hi))
    # Unbiased on average over many keys: the mean step equals the mean update.
    runs = jnp.stack([apply_updates_stochastic(pb, ub, jax.random.key(i)) for i in range(40)])
    moved = np.asarray(runs, np.float64).mean(0) - np.asarray(pb, np.float64)
    assert abs(moved.mean() - np.asarray(ub).mean()) < 2e-5
    with pytest.raises(ValueError, match="apply_updates_stochastic: the structure of updates"):
        apply_updates_stochastic({"a": pb}, {"b": ub}, key)


BF16_INNER = {
    "adamw": lambda: gradtx.adamw(
        1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16, weight_decay=0.0
    ),
    "lion": lambda: gradtx.lion(1e-3, mu_dtype=jnp.bfloat16, weight_decay=0.0),
    "sgd_momentum": lambda: gradtx.sgd(2e-3, momentum=0.9, accumulator_dtype=jnp.bfloat16),
}


@pytest.mark.parametrize("name", list(BF16_INNER))
def test_bf16_training_progresses_with_stochastic_rounding_only(name):
    # Parameters near 1 in bfloat16 (spacing 2^-7 ≈ 0.0078 on [1, 2)) with steps of about 1e-3,
    # below half the spacing: nearest rounding returns the same parameters every step.
    opt = BF16_INNER[name]()
    rng = np.random.default_rng(0)
    target = jnp.asarray(1.5 + 0.1 * rng.normal(size=256), jnp.float32)
    p0 = jnp.asarray(target + 0.15, jnp.bfloat16)

    def loss(p):
        return 0.5 * jnp.mean((p.astype(jnp.float32) - target) ** 2)

    @jax.jit
    def run(p, key):
        def body(carry, t):
            p, s = carry
            g = jax.grad(loss)(p) * 256  # per-coordinate gradient p − target
            u, s = opt.update(g, s, p)
            if key is None:
                p = gradtx.apply_updates(p, u)
            else:
                p = apply_updates_stochastic(p, u, jax.random.fold_in(key, t))
            return (p, s), jnp.max(jnp.abs(u.astype(jnp.float32)))

        (p, s), steps = jax.lax.scan(body, (p, opt.init(p)), jnp.arange(600))
        return p, s, steps

    nearest, s, steps = run(p0, None)
    assert float(jnp.max(steps)) < 2**-8  # every step below half the spacing
    np.testing.assert_array_equal(np.asarray(nearest, np.float32), np.asarray(p0, np.float32))
    assert all(
        x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(s) if x.dtype != jnp.int32
    )
    rounded, _, _ = run(p0, jax.random.key(0))
    assert rounded.dtype == jnp.bfloat16
    assert float(loss(rounded)) < 0.1 * float(loss(p0)), (float(loss(rounded)), float(loss(p0)))


# ----------------------------------------------------------------------------------------------
# Differential privacy.


def _per_example_grads(batch=6, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    scale = np.array([0.05, 0.2, 0.5, 1.5, 4.0, 0.0])[:batch]  # norms below and above C = 1
    g = {
        "w": rng.normal(size=(batch, 3, 2)) * scale[:, None, None] / 2,
        "b": rng.normal(size=(batch, 2)) * scale[:, None] / 2,
    }
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), g)


def _np_dp_mean(g, clip):
    """Abadi et al. 2016, Algorithm 1 without the noise: g_b / max(1, ‖g_b‖/C), summed, / B."""
    w = np.asarray(g["w"], np.float64)
    b = np.asarray(g["b"], np.float64)
    n = w.shape[0]
    norms = np.sqrt(np.sum(w.reshape(n, -1) ** 2, 1) + np.sum(b**2, 1))
    factor = 1 / np.maximum(1, norms / clip)
    return {
        "w": np.sum(w * factor[:, None, None], 0) / n,
        "b": np.sum(b * factor[:, None], 0) / n,
    }, norms


def test_dp_aggregate_matches_optax_with_noise():
    g = _per_example_grads()
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    ours = differentially_private_aggregate(1.0, 1.1, key=jax.random.key(42))
    theirs = optax.contrib.differentially_private_aggregate(1.0, 1.1, key=jax.random.key(42))
    s, t = ours.init(params), theirs.init(params)
    assert isinstance(s, DifferentiallyPrivateAggregateState)
    for step in range(3):  # the key advances the same way
        g_step = jax.tree_util.tree_map(lambda x, k=1 + step: x * k, g)
        u, s = ours.update(g_step, s, params)
        v, t = theirs.update(g_step, t, params)
        for k in g:
            np.testing.assert_allclose(np.asarray(u[k]), np.asarray(v[k]), rtol=1e-5, atol=1e-6)
            assert u[k].shape == params[k].shape


def test_dp_aggregate_noise_free_part_matches_numpy(x64):
    g = _per_example_grads(dtype=np.float64)
    want, norms = _np_dp_mean(g, 1.0)
    assert (norms > 1).sum() >= 2 and (norms < 1).sum() >= 2  # both branches of the clip
    tx = differentially_private_aggregate(1.0, 0.0, key=0)
    u, _ = tx.update(g, tx.init(None))
    for k in g:
        np.testing.assert_allclose(np.asarray(u[k]), want[k], rtol=1e-12, atol=1e-15)


def test_dp_aggregate_noise_statistics():
    # Zero per-example gradients: B · output = σ C · N(0, I); 2 · 50,000 coordinates per step.
    sigma, clip, batch = 1.3, 0.7, 4
    params = {"a": jnp.zeros(50_000), "b": jnp.zeros(50_000)}
    zeros = jax.tree_util.tree_map(lambda p: jnp.zeros((batch,) + p.shape), params)
    tx = differentially_private_aggregate(clip, sigma, key=5)
    s = tx.init(params)
    u1, s = tx.update(zeros, s, params)
    u2, s = tx.update(zeros, s, params)
    z1 = np.concatenate([np.asarray(u1[k]) for k in params]) * batch / (sigma * clip)
    z2 = np.concatenate([np.asarray(u2[k]) for k in params]) * batch / (sigma * clip)
    n = z1.size
    for z in (z1, z2):
        assert abs(z.mean()) < 5 / np.sqrt(n)
        assert abs(z.std() - 1) < 5 / np.sqrt(2 * n)
        assert abs(np.mean(z**4) - 3) < 5 * np.sqrt(96 / n)  # Gaussian kurtosis
    assert abs(np.mean(z1 * z2)) < 5 / np.sqrt(n)  # new noise every step
    assert abs(np.mean(z1[: n // 2] * z1[n // 2 :])) < 5 / np.sqrt(n / 2)  # leaves independent


@pytest.mark.parametrize("momentum, nesterov", [(None, False), (0.9, False), (0.9, True)])
def test_dpsgd_matches_optax_and_numpy(momentum, nesterov):
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    ours = dpsgd(0.1, 1.0, 0.5, seed=3, momentum=momentum, nesterov=nesterov)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # optax's seed= is deprecated
        theirs = optax.contrib.dpsgd(0.1, 1.0, 0.5, seed=3, momentum=momentum, nesterov=nesterov)
    s, t = ours.init(params), theirs.init(params)
    p, q = params, params
    for step in range(10):
        g = _per_example_grads(seed=step)
        u, s = ours.update(g, s, p)
        v, t = theirs.update(g, t, q)
        p, q = gradtx.apply_updates(p, u), optax.apply_updates(q, v)
    for k in params:
        np.testing.assert_allclose(np.asarray(p[k]), np.asarray(q[k]), rtol=1e-5, atol=1e-6)
    # Noise-free, against NumPy: heavy ball (or Nesterov) on the clipped mean, θ ← θ − α m.
    ours = dpsgd(0.1, 1.0, 0.0, seed=3, momentum=momentum, nesterov=nesterov)
    s, p = ours.init(params), params
    x = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in x.items()}
    for step in range(10):
        g = _per_example_grads(seed=step)
        u, s = ours.update(g, s, p)
        p = gradtx.apply_updates(p, u)
        mean, _ = _np_dp_mean(g, 1.0)
        for k in x:
            rho = momentum or 0.0
            m[k] = mean[k] + rho * m[k]
            d = mean[k] + rho * m[k] if nesterov else m[k]
            x[k] = x[k] - 0.1 * d
    for k in params:
        np.testing.assert_allclose(np.asarray(p[k]), x[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_dpsgd_low_precision_and_abstract_init(dtype):
    dt = jnp.dtype(dtype)
    params = {"w": jnp.ones((3, 2), dt), "b": jnp.zeros(2, dt)}
    opt = dpsgd(0.1, 1.0, 0.5, seed=0, momentum=0.9)
    abstract = jax.eval_shape(
        opt.init, jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    )
    state = opt.init(params)
    assert jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), abstract) == (
        jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), state)
    )
    step = jax.jit(lambda g, s, p: opt.update(g, s, p))
    for t in range(3):
        g = jax.tree_util.tree_map(lambda x: x.astype(dt), _per_example_grads(seed=t))
        u, new = step(g, state, params)
        assert all(x.dtype == dt for x in jax.tree_util.tree_leaves(u))
        assert jax.tree_util.tree_map(lambda x: x.dtype, new) == jax.tree_util.tree_map(
            lambda x: x.dtype, state
        )
        params, state = gradtx.apply_updates(params, u), new
        assert all(np.isfinite(np.asarray(x, np.float32)).all() for x in jax.tree.leaves(params))


def test_dp_arguments_and_batch_axis():
    with pytest.raises(ValueError, match=r"differentially_private_aggregate: l2_norm_clip must"):
        differentially_private_aggregate(-1.0, 1.0, key=0)
    with pytest.raises(
        ValueError, match=r"dpsgd: noise_multiplier must be in \[0, inf\], got -0.5"
    ):
        dpsgd(0.1, 1.0, -0.5, seed=0)
    with pytest.raises(ValueError, match=r"dpsgd: momentum must be in \[0, 1\], got 1.5"):
        dpsgd(0.1, 1.0, 0.5, seed=0, momentum=1.5)
    with pytest.raises(TypeError, match="dpsgd: seed must be an int seed or a jax.random key"):
        dpsgd(0.1, 1.0, 0.5, seed="0")
    with pytest.raises(ValueError, match="differentially_private_aggregate: key must be an int"):
        differentially_private_aggregate(1.0, 1.0, key=0.5)
    with pytest.raises(ValueError, match="pass only one of key and seed"):
        differentially_private_aggregate(1.0, 1.0, key=0, seed=1)
    with pytest.warns(UserWarning, match="no key given"):
        differentially_private_aggregate(1.0, 1.0)
    tx = differentially_private_aggregate(1.0, 1.0, seed=0)
    bad = {"a": jnp.ones((3, 2)), "b": jnp.ones((4,))}
    with pytest.raises(ValueError, match="same batch size on axis 0"):
        tx.update(bad, tx.init(None))
    # seed= and key= with the same int are the same stream.
    g = _per_example_grads()
    u1, _ = tx.update(g, tx.init(None))
    tx2 = differentially_private_aggregate(1.0, 1.0, key=0)
    u2, _ = tx2.update(g, tx2.init(None))
    np.testing.assert_array_equal(np.asarray(u1["w"]), np.asarray(u2["w"]))


# ----------------------------------------------------------------------------------------------
# Construction errors, abstract init, low-precision parameters.


def test_bad_arguments_name_the_function():
    with pytest.raises(ValueError, match=r"cautious: eps must be in \[0, inf\], got -1.0"):
        cautious(gradtx.sgd(0.1), eps=-1.0)
    with pytest.raises(ValueError, match=r"mars_adamw: gamma must be in \[0, inf\], got -0.1"):
        mars_adamw(1e-3, gamma=-0.1)
    with pytest.raises(ValueError, match=r"mars_adamw: b1 must be in \[0, 1\), got 1.0"):
        mars_adamw(1e-3, b1=1.0)
    with pytest.raises(
        ValueError, match=r"mars_adamw: clip_threshold must be in \(0, inf\], got 0.0"
    ):
        mars_adamw(1e-3, clip_threshold=0.0)
    with pytest.raises(ValueError, match=r"scale_by_mars_correction: gamma must be"):
        scale_by_mars_correction(gamma=float("nan"))


OPTIMIZERS = {
    "cautious_adamw": lambda: cautious(gradtx.adamw(1e-3)),
    "mars_adamw": lambda: mars_adamw(1e-3),
    "sam": lambda: sam(gradtx.adam(1e-3), gradtx.chain(normalize(), gradtx.sgd(0.05))),
    "split_real_and_imaginary": lambda: split_real_and_imaginary(gradtx.adam(1e-3)),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_abstract_init_and_low_precision_params(name, dtype):
    opt = OPTIMIZERS[name]()
    dt = jnp.dtype(dtype)
    params = {"w": jnp.asarray(np.linspace(-1, 1, 6).reshape(3, 2), dt), "b": jnp.ones(2, dt)}
    abstract = jax.eval_shape(
        opt.init, jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    )
    state = opt.init(params)
    assert jax.tree_util.tree_structure(abstract) == jax.tree_util.tree_structure(state)
    for a, b in zip(
        jax.tree_util.tree_leaves(abstract), jax.tree_util.tree_leaves(state), strict=True
    ):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    step = jax.jit(lambda g, s, p: opt.update(g, s, p))
    for t in range(4):
        shift = 0.3 * np.cos(t)
        g = jax.tree_util.tree_map(lambda p, c=shift: (p - c).astype(dt), params)
        u, new = step(g, state, params)
        assert all(x.dtype == dt for x in jax.tree_util.tree_leaves(u))
        assert jax.tree_util.tree_map(lambda x: x.dtype, new) == jax.tree_util.tree_map(
            lambda x: x.dtype, state
        )
        params, state = gradtx.apply_updates(params, u), new
        assert all(
            bool(jnp.all(jnp.isfinite(x.astype(jnp.float32))))
            for x in jax.tree_util.tree_leaves(params)
        )


# ----------------------------------------------------------------------------------------------
# split_real_and_imaginary: ℂⁿ as ℝ²ⁿ for the inner optimizer.


def _complex_problem(seed=0):
    """Complex params (a matrix and a scalar) and a real vector, and a gradient oracle whose
    real and imaginary parts differ in scale (so that ℂ as ℝ² and ℂ as ℂ give different
    second moments)."""
    rng = np.random.default_rng(seed)

    def c(*shape):
        return rng.normal(size=shape) + 1j * rng.normal(size=shape)

    params = {"z": c(3, 2), "s": c(), "r": rng.normal(size=4)}
    target = {"z": c(3, 2), "s": c(), "r": rng.normal(size=4)}

    def grad(p, t):
        def leaf(x, y):
            d = x - y + 0.3 * np.sin(t + np.real(x))
            return np.real(d) + 3j * np.imag(d) if np.iscomplexobj(d) else d

        return {k: leaf(p[k], target[k]) for k in p}

    return params, grad


def _run_complex(opt, params, grad, steps, cdtype, rdtype, apply):
    p = {k: jnp.asarray(v, cdtype if np.iscomplexobj(v) else rdtype) for k, v in params.items()}
    state = opt.init(p)
    step = jax.jit(lambda g, s, p: opt.update(g, s, p))
    for t in range(steps):
        g = grad({k: np.asarray(v) for k, v in p.items()}, t)
        g = {k: jnp.asarray(v, p[k].dtype) for k, v in g.items()}
        u, state = step(g, state, p)
        assert all(u[k].dtype == p[k].dtype for k in p)
        p = apply(p, u)
    return p, state


def _np_adam_on_pairs(lr, b1, b2, eps):
    # Kingma & Ba 2015, Algorithm 1, run on every real number: a complex entry is two of them
    def init(xs):
        return {"m": {k: np.zeros(np.shape(x) + (2,)) for k, x in xs.items()},
                "v": {k: np.zeros(np.shape(x) + (2,)) for k, x in xs.items()}}  # fmt: skip

    def pair(x):
        return np.stack([np.real(x), np.imag(x)], -1) if np.iscomplexobj(x) else x[..., None]

    def step(xs, gs, st, t):
        out = {}
        for k, x in xs.items():
            g = pair(gs[k])
            n = g.shape[-1]
            m = st["m"][k][..., :n] = b1 * st["m"][k][..., :n] + (1 - b1) * g
            v = st["v"][k][..., :n] = b2 * st["v"][k][..., :n] + (1 - b2) * g * g
            u = -lr * (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps)
            out[k] = x + (u[..., 0] + 1j * u[..., 1] if n == 2 else u[..., 0])
        return out, st

    return init, step


def test_split_real_and_imaginary_matches_adam_on_pairs(x64):
    params, grad = _complex_problem(0)
    lr, b1, b2, eps = 0.05, 0.8, 0.95, 1e-3
    ours, _ = _run_complex(split_real_and_imaginary(gradtx.adam(lr, b1, b2, eps)), params, grad,
                           STEPS, jnp.complex128, jnp.float64, gradtx.apply_updates)  # fmt: skip
    init, step = _np_adam_on_pairs(lr, b1, b2, eps)
    xs, st = dict(params), None
    st = init(xs)
    for t in range(STEPS):
        xs, st = step(xs, grad(xs, t), st, t)
    for k in params:
        np.testing.assert_allclose(np.asarray(ours[k]), xs[k], rtol=1e-8, atol=1e-12)
        assert np.max(np.abs(xs[k] - params[k])) > 0.1
    # Adam on the complex leaves themselves keeps one |g|² per entry: other steps (both runs
    # end near the same minimum, so compare early, after 3 steps)
    runs = [
        _run_complex(opt, params, grad, 3, jnp.complex128, jnp.float64, gradtx.apply_updates)[0]
        for opt in (split_real_and_imaginary(gradtx.adam(lr, b1, b2, eps)),
                    gradtx.adam(lr, b1, b2, eps))
    ]  # fmt: skip
    assert np.max(np.abs(np.asarray(runs[0]["z"]) - np.asarray(runs[1]["z"]))) > 1e-2
    np.testing.assert_allclose(runs[0]["r"], runs[1]["r"], rtol=1e-12)  # real leaves: the same


SPLIT_INNER = {
    "adam": (lambda: gradtx.adam(0.05, eps=1e-3), lambda: optax.adam(0.05, eps=1e-3)),
    "lion": (lambda: gradtx.lion(0.01), lambda: optax.lion(0.01)),
    "sgd_momentum": (lambda: gradtx.sgd(0.05, 0.9), lambda: optax.sgd(0.05, 0.9)),
}


@pytest.mark.parametrize("name", list(SPLIT_INNER))
def test_split_real_and_imaginary_matches_optax(name):
    ours_inner, theirs_inner = SPLIT_INNER[name]
    params, grad = _complex_problem(1)
    ours, s_ours = _run_complex(split_real_and_imaginary(ours_inner()), params, grad, STEPS,
                                jnp.complex64, jnp.float32, gradtx.apply_updates)  # fmt: skip
    theirs, s_theirs = _run_complex(
        optax.contrib.split_real_and_imaginary(theirs_inner()), params, grad, STEPS,
        jnp.complex64, jnp.float32, optax.apply_updates,
    )  # fmt: skip
    for k in params:
        np.testing.assert_allclose(np.asarray(ours[k]), np.asarray(theirs[k]),
                                   rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)  # fmt: skip
        assert float(np.max(np.abs(np.asarray(ours[k]) - params[k]))) > 0.1
    # the same state layout: the inner state over (real, imaginary) pairs, optax's field names
    assert SplitRealAndImaginaryState._fields == optax.contrib.SplitRealAndImaginaryState._fields
    pair = s_ours.inner_state[0][1]["z"] if name != "sgd_momentum" else None
    if pair is not None:
        assert isinstance(pair, SplitRealAndImaginaryArrays)
        assert pair._fields == ("real", "imaginary") and pair.real.dtype == jnp.float32
    assert [np.shape(x) for x in jax.tree_util.tree_leaves(s_ours)] == [
        np.shape(x) for x in jax.tree_util.tree_leaves(s_theirs)
    ]


def test_split_real_and_imaginary_passes_extra_args_and_real_trees():
    # MoMo needs value=: it reaches the inner optimizer. On real params the wrapper is the
    # inner optimizer itself; on complex ones MoMo's ⟨g, x⟩ over pairs is Re⟨g, x⟩.
    x = {"w": jnp.array([1.0, -2.0]), "z": jnp.array([0.5 + 1.0j])}
    g = {"w": jnp.array([0.3, 0.1]), "z": jnp.array([2.0 - 1.0j])}
    opt = split_real_and_imaginary(gradtx.momo(beta=0.0))
    u, _ = opt.update(g, opt.init(x), x, value=jnp.asarray(4.0))
    # τ = min(1, (f − ⟨g, x⟩ + ⟨g, x⟩)/‖g‖²) = 4 / (0.09 + 0.01 + 4 + 1) = 4 / 5.1
    tau = 4.0 / 5.1
    np.testing.assert_allclose(u["w"], -tau * np.asarray(g["w"]), rtol=1e-5)
    np.testing.assert_allclose(u["z"], -tau * np.asarray(g["z"]), rtol=1e-5)
    assert u["z"].dtype == jnp.complex64
    real = {"w": x["w"]}
    inner = gradtx.adam(0.1)
    u1, _ = split_real_and_imaginary(inner).update(real, split_real_and_imaginary(inner).init(
        real), real)  # fmt: skip
    u2, _ = inner.update(real, inner.init(real), real)
    np.testing.assert_array_equal(u1["w"], u2["w"])
    abstract = jax.eval_shape(split_real_and_imaginary(inner).init, jax.tree_util.tree_map(
        lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), x))  # fmt: skip
    assert abstract.inner_state[0].nu["z"].real.dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# Digits.


DIGITS = {
    # name: (optimizer with its documented defaults and a chosen learning rate, opaque SAM)
    "cautious_adamw": (lambda: cautious(gradtx.adamw(2e-3)), False),
    "mars_adamw": (lambda: mars_adamw(2e-3), False),
    "sam_adamw": (
        lambda: sam(
            gradtx.adamw(2e-3), gradtx.chain(normalize(), gradtx.sgd(0.05)), opaque_mode=True
        ),
        True,
    ),
}


@pytest.mark.parametrize("name", list(DIGITS))
def test_digits_mlp_reaches_95_percent(name):
    make, opaque = DIGITS[name]
    opt = make()
    x_tr, y_tr, x_te, y_te = digits()
    steps, batch = 400, 64
    rng = np.random.default_rng(0)
    idx = np.concatenate(
        [rng.permutation(len(x_tr)) for _ in range(steps * batch // len(x_tr) + 1)]
    )
    idx = idx[: steps * batch].reshape(steps, batch)

    @jax.jit
    def train(params, xb, yb):
        def step(carry, b):
            params, state = carry
            grads = jax.grad(loss)(params, *b)
            extra = {"grad_fn": lambda p, i: jax.grad(loss)(p, *b)} if opaque else {}
            updates, state = opt.update(grads, state, params, **extra)
            return (gradtx.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (xb, yb))
        return params

    params = train(init_mlp(jax.random.PRNGKey(0), (64, 128, 10)), x_tr[idx], y_tr[idx])
    acc = float(jnp.mean(jnp.argmax(logits(params, x_te), -1) == y_te))
    assert acc >= 0.95, (name, acc)
