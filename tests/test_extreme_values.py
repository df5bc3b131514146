"""Extreme values (issue 14, part 3): huge and tiny gradients, and NaN/Inf under apply_if_finite.

- every adaptive case of the registry (``Case.adaptive``: its step does not grow with the
  gradient's scale) keeps params and every inexact state leaf finite over 5 jitted steps at
  gradient scales 1e-30 to 1e30 in float32;
- the documented bound: squared moments saturate at the largest float of their dtype (exact
  values checked), Adam/RMSProp/Lion without ε are scale invariant where nothing overflows
  (1e-15 to 1e15, against a float64 NumPy run at scale 1), a saturated Adam state decays back
  to the NumPy recursion, float16 Adam's ν stops at 65504, DoG's step stays at most r̄ long;
- norms computed per step (global-norm clipping, trust ratios, AGC, update normalisation,
  per-example clipping, ...) equal a float64 NumPy computation at 1e25 and 1e-30, where the
  plain sum of squares overflows or underflows, and equal the plain computation bit for bit
  where it does not;
- ``scale_by_sm3`` accepts zero-size arrays;
- under ``apply_if_finite``, a NaN, +Inf or −Inf in the gradient leaves every registry case's
  params and inner state bit-identical (the counters are covered by tests/test_safety.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from registry import CASES

import gradtx
from gradtx import numerics, safe_math

F32_MAX = float(np.finfo(np.float32).max)
SCALES = [1e-30, 1e-20, 1e-10, 1.0, 1e10, 1e20, 1e30]
ADAPTIVE = [c for c in CASES if c.adaptive]


def _params(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 2)), dtype),
        "b": jnp.asarray(rng.normal(size=(2,)), dtype),
    }


def _pattern(p0, t):
    """The step-``t`` gradient pattern (float64 NumPy leaves), fixed by the initial params.

    It does not depend on the current params on purpose: the scale under test is then the
    gradient's own. With gradients that grow with the params, a step that grows with the
    gradient feeds on itself (RAdam's first steps are plain momentum; Adam's step while ν sits
    at its cap is about ``|g| / 1.8e19``, the documented bound tested below) until the gradient
    itself overflows.
    """
    return {
        k: np.asarray(v, np.float64) - 0.5 * np.cos(np.asarray(v, np.float64) * (t + 1))
        for k, v in p0.items()
    }


def _leaves_finite(tree):
    for x in jax.tree_util.tree_leaves(tree):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            assert bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))), x
    return True


def _extra(case, params, grads):
    return case.extra_args(params, grads) if case.extra_args else {}


# ----------------------------------------------------------------------------------------------
# Every adaptive method at gradient scales 1e-30 .. 1e30.


@pytest.mark.parametrize("case", ADAPTIVE, ids=[c.name for c in ADAPTIVE])
def test_gradient_scales_keep_params_and_state_finite(case):
    p0 = _params()
    pats = [_pattern(p0, t) for t in range(5)]
    patterns = {k: jnp.asarray(np.stack([p[k] for p in pats]), jnp.float32) for k in p0}
    opt = case.make(case.lr)

    @jax.jit
    def run(scale):
        def body(carry, g1):
            params, state = carry
            g = jax.tree_util.tree_map(lambda x: x * scale, g1)
            # the stand-in objective value (polyak, plateau) is the loss, not scaled with g
            u, state = opt.update(g, state, params, **_extra(case, params, g1))
            return (gradtx.apply_updates(params, u), state), None

        return jax.lax.scan(body, (p0, opt.init(p0)), patterns)[0]

    for scale in SCALES:
        params, state = run(jnp.float32(scale))
        assert _leaves_finite(params), (case.name, scale)
        assert _leaves_finite(state), (case.name, scale)


# ----------------------------------------------------------------------------------------------
# The bound: saturation, scale invariance where nothing saturates, recovery.


def _adam_numpy(grads, lr, b1=0.9, b2=0.999, eps=0.0, v_cap=np.inf, m=None, v=None, t0=0):
    """Adam in float64 with ν capped at ``v_cap`` (the documented saturation); returns the sum
    of the updates applied (``θ_T − θ_0``), the last update and the final (m, v)."""
    m = np.zeros_like(grads[0]) if m is None else m
    v = np.zeros_like(grads[0]) if v is None else v
    total = np.zeros_like(grads[0])
    u = None
    for i, g in enumerate(grads):
        t = t0 + i + 1
        m = b1 * m + (1 - b1) * g
        v = np.minimum(b2 * v + (1 - b2) * g * g, v_cap)
        u = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        total -= lr * u
    return total, u, m, v


def _rmsprop_numpy(grads, lr, decay=0.9):
    v, total = np.zeros_like(grads[0]), np.zeros_like(grads[0])
    for g in grads:
        v = decay * v + (1 - decay) * g * g
        total -= lr * g / np.sqrt(v)
    return total


def _lion_numpy(grads, lr, b1=0.9, b2=0.99):
    m, total = np.zeros_like(grads[0]), np.zeros_like(grads[0])
    for g in grads:
        total -= lr * np.sign(b1 * m + (1 - b1) * g)
        m = b2 * m + (1 - b2) * g
    return total


SCALE_FREE = [
    ("adam", lambda: gradtx.adam(1e-2, eps=0.0), lambda gs: _adam_numpy(gs, 1e-2)[0]),
    ("rmsprop", lambda: gradtx.rmsprop(1e-2, eps=0.0), lambda gs: _rmsprop_numpy(gs, 1e-2)),
    ("lion", lambda: gradtx.lion(1e-2, weight_decay=0.0), lambda gs: _lion_numpy(gs, 1e-2)),
]


@pytest.mark.parametrize("name, build, reference", SCALE_FREE, ids=[s[0] for s in SCALE_FREE])
def test_scale_invariance_where_nothing_saturates(name, build, reference):
    p0 = _params()
    pats = [_pattern(p0, t) for t in range(5)]
    want = {k: np.asarray(p0[k], np.float64) + reference([p[k] for p in pats]) for k in p0}
    opt = build()

    @jax.jit
    def run(scale):
        params, state = p0, opt.init(p0)
        for pat in pats:
            g = {k: jnp.asarray(v, jnp.float32) * scale for k, v in pat.items()}
            u, state = opt.update(g, state, params)
            params = gradtx.apply_updates(params, u)
        return params

    for scale in [1e-15, 1e-5, 1.0, 1e5, 1e15]:
        got = run(jnp.float32(scale))
        for k in p0:
            np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-5, atol=1e-6)


def _one_step_state(tx, g, params=None):
    params = jax.tree_util.tree_map(jnp.zeros_like, g) if params is None else params
    return jax.jit(tx.update)(g, tx.init(params), params)


def test_squared_moments_saturate_at_the_dtype_maximum():
    g = jnp.asarray([1e20, -3e25, 2e30], jnp.float32)  # |g|² overflows float32 everywhere
    g64 = np.asarray(g, np.float64)
    _, s = _one_step_state(gradtx.scale_by_adam(), g)
    np.testing.assert_array_equal(np.asarray(s.nu), F32_MAX)
    _, s = _one_step_state(gradtx.scale_by_rss(), g)
    np.testing.assert_array_equal(np.asarray(s.sum_of_squares), F32_MAX)
    _, s = _one_step_state(gradtx.scale_by_rms(), g)
    np.testing.assert_array_equal(np.asarray(s.nu), F32_MAX)
    _, s = _one_step_state(gradtx.scale_by_sm3(), g)
    np.testing.assert_array_equal(np.asarray(s.accumulators), F32_MAX)
    # Yogi: v − (1 − β2) sign(v − |g|²)|g|² with |g|² capped: v0 + (1 − β2)·max, not
    # inf − inf (β2 is a float32 leaf: 1 − β2 is 1 − float32(0.999))
    _, s = _one_step_state(gradtx.scale_by_yogi(), g)
    want = np.float32(1e-6 + (1 - float(np.float32(0.999))) * F32_MAX)
    np.testing.assert_allclose(np.asarray(s.nu), want, rtol=1e-6)
    # NovoGrad's layer norm² and AdaDelta's two accumulators
    _, s = _one_step_state(gradtx.scale_by_novograd(), g)
    np.testing.assert_array_equal(np.asarray(s.nu), F32_MAX)
    u, s = _one_step_state(gradtx.scale_by_adadelta(), g)
    np.testing.assert_array_equal(np.asarray(s.e_g), F32_MAX)
    # the step: sqrt(ε) / sqrt(max + ε) · g, then e_x = (1 − ρ) Δ² (finite)
    step = np.sqrt(1e-6) / np.sqrt(F32_MAX) * g64
    np.testing.assert_allclose(np.asarray(u), step, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(s.e_x), 0.1 * step**2, rtol=1e-5)
    # Adafactor's factored rows and columns: V̂ = R C / mean(R) = max, U = g / sqrt(max)
    g2 = jnp.asarray(np.outer([1e20, -3e25, 2e30], [1.0, -2.0]), jnp.float32)
    u, s = _one_step_state(gradtx.scale_by_factored_rms(min_dim_size_to_factor=2), g2)
    np.testing.assert_array_equal(np.asarray(s.v_row), F32_MAX)
    np.testing.assert_array_equal(np.asarray(s.v_col), F32_MAX)
    np.testing.assert_allclose(
        np.asarray(u), np.asarray(g2, np.float64) / np.sqrt(F32_MAX), rtol=1e-5
    )


def test_centred_rmsprop_at_the_cap_takes_rmsprop_step():
    g = jnp.asarray([1e20, -3e25, 2e30], jnp.float32)
    u, s = _one_step_state(gradtx.scale_by_stddev(), g)
    np.testing.assert_array_equal(np.asarray(s.nu), F32_MAX)
    # G at the cap replaces G − |m|²: u = g / sqrt(max + ε)
    np.testing.assert_allclose(
        np.asarray(u), np.asarray(g, np.float64) / np.sqrt(F32_MAX), rtol=1e-6
    )


def test_saturated_adam_state_recovers():
    b1, b2, lr = 0.9, 0.9, 1e-3  # β2 = 0.9 forgets the cap in ~850 steps (0.999: ~89,000)
    p0 = {"w": _params()["w"]}
    pat = {"w": _pattern(p0, 0)["w"]}
    huge, normal = 3, 1000
    gs = [pat["w"] * 1e30] * huge + [pat["w"] * (1 + 0.1 * np.sin(t)) for t in range(normal)]
    g32 = jnp.asarray(np.stack(gs), jnp.float32)
    opt = gradtx.adam(lr, b1=b1, b2=b2)

    @jax.jit
    def run(g32):
        def body(carry, g):
            p, s = carry
            u, s = opt.update({"w": g}, s, p)
            return (gradtx.apply_updates(p, u), s), (u["w"], s[0].nu["w"])

        return jax.lax.scan(body, (p0, opt.init(p0)), g32)

    (params, state), (us, nus) = run(g32)
    nus, us = np.asarray(nus), np.asarray(us)
    # during the huge steps ν sits at the cap, and every update is finite and non-zero
    np.testing.assert_array_equal(nus[:huge], F32_MAX)
    assert np.all(np.isfinite(us)) and np.all(us != 0)
    # afterwards ν decays back: the float64 recursion with ν capped, step for step
    g64 = [np.asarray(g, np.float64) for g in np.asarray(g32)]  # what gradtx received
    _, u_last, m_last, v_last = _adam_numpy(g64, lr, b1, b2, eps=1e-8, v_cap=F32_MAX)
    np.testing.assert_allclose(nus[-1], v_last, rtol=1e-4)
    assert np.all(nus[-1] < 10 * np.max(pat["w"] ** 2 * 1.1**2))  # back to normal values
    np.testing.assert_allclose(np.asarray(state[0].mu["w"]), m_last, rtol=1e-4)
    np.testing.assert_allclose(us[-1], -lr * u_last, rtol=1e-4)
    assert _leaves_finite((params, state))


def test_float16_adam_nu_saturates_at_65504():
    # |g| = 1000: g² = 1e6 overflows float16, so ν (float16, as the params) stops at 65504
    g = jnp.asarray([1000.0, -1000.0, 1000.0], jnp.float16)
    opt = gradtx.adam(0.1)
    p = jnp.zeros(3, jnp.float16)
    s = opt.init(p)
    step = jax.jit(opt.update)
    m = np.zeros(3)
    for t in range(1, 4):
        u, s = step(g, s, p)
        nu = np.asarray(s[0].nu)
        assert nu.dtype == np.float16
        np.testing.assert_array_equal(nu, 65504.0)
        # the documented step: m̂ / (sqrt(65504 / (1 − β2^t)) + ε), m stored in float16
        m = np.float16(0.9 * m + 0.1 * np.asarray(g, np.float64)).astype(np.float64)
        want = -0.1 * (m / (1 - 0.9**t)) / (np.sqrt(65504.0 / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(np.asarray(u, np.float64), want, rtol=2e-3)


def test_dog_steps_stay_at_most_r_bar_long_when_g_saturates():
    p = _params()
    g = {k: jnp.asarray(v * 1e30, jnp.float32) for k, v in _pattern(p, 0).items()}
    g64 = {k: np.asarray(v, np.float64) for k, v in g.items()}
    # global DoG with r̄ = 0.5: G = ‖g‖² is capped, the denominator is ‖g‖ itself
    u, s = _one_step_state(gradtx.scale_by_dog(("distance", 0.5), eps=0.0), g, p)
    norm = np.sqrt(sum(np.sum(x**2) for x in g64.values()))
    assert float(s.sum_sq_norm_grads) == F32_MAX
    for k in p:
        np.testing.assert_allclose(np.asarray(u[k]), 0.5 * g64[k] / norm, rtol=1e-5)
    # layer-wise: r̄_l = ρ (1 + ‖θ_l‖), step r̄_l g_l / ‖g_l‖
    u, s = _one_step_state(gradtx.scale_by_distance_over_gradients(0.1, eps=0.0), g, p)
    for k in p:
        r = 0.1 * (1 + np.linalg.norm(np.asarray(p[k], np.float64)))
        want = r * g64[k] / np.linalg.norm(g64[k])
        np.testing.assert_allclose(np.asarray(u[k]), want, rtol=1e-5)
        assert float(s.grad_sum_of_squares[k]) == F32_MAX


# ----------------------------------------------------------------------------------------------
# Norms computed per step: correct at any finite scale.


def _np(tree):
    return {k: np.asarray(v, np.float64) for k, v in tree.items()}


def _norm(tree):
    return np.sqrt(sum(np.sum(np.abs(x) ** 2) for x in tree.values()))


def _ref_clip_global(g, p, c=1.0):
    n = _norm(g)
    return {k: x * min(1.0, c / n) for k, x in g.items()}


def _ref_normalize(g, p):
    return {k: x / _norm(g) for k, x in g.items()}


def _ref_trust(g, p):
    return {k: g[k] * np.linalg.norm(p[k]) / np.linalg.norm(g[k]) for k in g}


def _ref_lars(g, p, beta=0.1):
    out = {}
    for k in g:
        wn, gn = np.linalg.norm(p[k]), np.linalg.norm(g[k])
        out[k] = wn / (gn + beta * wn) * (g[k] + beta * p[k])
    return out


def _unit(x):  # NFNets' units: a vector is one unit, a (in, out) kernel sums over axis 0
    if x.ndim <= 1:
        return np.full(x.shape, np.linalg.norm(x))
    return np.broadcast_to(np.sqrt(np.sum(x**2, axis=0, keepdims=True)), x.shape)


def _ref_agc(g, p, lam=0.1, eps=1e-3):
    out = {}
    for k in g:
        gn, pn = _unit(g[k]), np.maximum(_unit(p[k]), eps)
        out[k] = np.where(gn < lam * pn, g[k], g[k] * lam * pn / gn)
    return out


def _ref_block_rms(g, p):
    return {k: x / max(1.0, np.sqrt(np.mean(x**2))) for k, x in g.items()}


def _ref_param_block_norm(g, p):
    return {k: g[k] * max(np.linalg.norm(p[k]), 1e-3) for k in g}


NORMED = [
    ("clip_by_global_norm", lambda: gradtx.clip_by_global_norm(1.0), _ref_clip_global),
    ("normalize_by_update_norm", lambda: gradtx.normalize_by_update_norm(eps=0.0), _ref_normalize),
    ("scale_by_trust_ratio", lambda: gradtx.scale_by_trust_ratio(), _ref_trust),
    (
        "scale_by_lars",
        lambda: gradtx.scale_by_lars(trust_coefficient=1.0, weight_decay=0.1),
        _ref_lars,
    ),
    ("adaptive_grad_clip", lambda: gradtx.adaptive_grad_clip(0.1), _ref_agc),
    ("clip_by_block_rms", lambda: gradtx.clip_by_block_rms(1.0), _ref_block_rms),
    ("scale_by_param_block_norm", lambda: gradtx.scale_by_param_block_norm(), None),
]


@pytest.mark.parametrize("name, build, reference", NORMED, ids=[n[0] for n in NORMED])
def test_per_step_norms_are_correct_at_any_scale(name, build, reference):
    tx = build()
    base = _params(1)
    update = jax.jit(tx.update)
    for scale in [1e-30, 1.0, 1e25]:
        if reference is None:  # the params carry the scale (a parameter-norm scaling)
            p = {k: v * jnp.float32(scale) for k, v in _params(2).items()}
            g = base
            want = _ref_param_block_norm(_np(g), _np(p))
        else:
            p = _params(2)
            g = {k: v * jnp.float32(scale) for k, v in base.items()}
            want = reference(_np(g), _np(p))
        got, _ = update(g, tx.init(p), p)
        for k in g:
            np.testing.assert_allclose(np.asarray(got[k], np.float64), want[k], rtol=2e-6)


def test_clip_by_global_norm_of_1e25_gradients_against_float64():
    g = {k: v * jnp.float32(1e25) for k, v in _params(3).items()}
    got, _ = jax.jit(gradtx.clip_by_global_norm(1.0).update)(g, gradtx.EmptyState())
    g64 = _np(g)
    n = _norm(g64)
    for k in g:
        np.testing.assert_allclose(np.asarray(got[k], np.float64), g64[k] / n, rtol=2e-6)
    np.testing.assert_allclose(_norm(_np(got)), 1.0, rtol=1e-6)  # not zeros


def test_unitwise_and_per_example_norms_at_1e25():
    x = _params(4)["w"] * jnp.float32(1e25)
    np.testing.assert_allclose(
        np.asarray(gradtx.unitwise_norm(x), np.float64), _unit(np.asarray(x, np.float64)), 1e-6
    )
    batch = {"a": _params(5)["w"] * jnp.float32(1e25), "b": _params(6)["w"]}  # 3 examples
    total, n = gradtx.per_example_global_norm_clip(batch, 1.0)
    b64 = _np(batch)
    norms = np.sqrt(np.sum(b64["a"] ** 2, axis=1) + np.sum(b64["b"] ** 2, axis=1))
    for k in batch:
        np.testing.assert_allclose(
            np.asarray(total[k], np.float64), np.sum(b64[k] / norms[:, None], axis=0), rtol=1e-5
        )
    assert int(n) == 3


@pytest.mark.parametrize("scale", [1e-18, 1e-5, 1.0, 1e5, 1e18])
def test_safe_norms_equal_the_plain_computation_bit_for_bit(scale):
    tree = {k: v * jnp.float32(scale) for k, v in _params(7).items()}
    leaves = list(tree.values())
    got, plain = jax.jit(lambda t: (safe_math._global_norm(t), numerics.global_norm(t)))(tree)
    assert np.asarray(got).tobytes() == np.asarray(plain).tobytes()

    def roots(xs):
        return safe_math._roots(xs, [jnp.sum(x * x) for x in xs]), [
            jnp.sqrt(jnp.sum(x * x)) for x in xs
        ]

    got, plain = jax.jit(roots)(leaves)
    for a, b in zip(got, plain, strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


# ----------------------------------------------------------------------------------------------
# SM3 with zero-size arrays.


def test_sm3_accepts_zero_size_arrays():
    params = {
        "empty": jnp.zeros((0,)),
        "no_cols": jnp.zeros((3, 0)),
        "no_rows": jnp.zeros((0, 2)),
        "w": jnp.asarray([[1.0, -2.0], [3.0, 0.5]]),
    }
    g = {k: v * 2.0 + 1.0 for k, v in params.items()}
    tx = gradtx.sm3(0.1)
    state = tx.init(params)
    for update in (tx.update, jax.jit(tx.update)):
        u, s = update(g, state, params)
        for k, v in params.items():
            assert u[k].shape == v.shape and u[k].dtype == v.dtype
        # the non-empty leaf is SM3's first step: -lr (1 − β1) g / sqrt(g²) = -0.01 sign(g)
        np.testing.assert_allclose(
            np.asarray(u["w"]), -0.01 * np.sign(np.asarray(g["w"])), rtol=1e-6
        )
        assert [a.shape for a in s[0].accumulators["no_cols"]] == [(3,), (0,)]
        assert _leaves_finite(s)


# ----------------------------------------------------------------------------------------------
# NaN and Inf under apply_if_finite, for every registry case.


def _bits(tree):
    out = []
    for x in jax.tree_util.tree_leaves(tree):
        if jnp.issubdtype(jnp.asarray(x).dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x).tobytes())
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_nonfinite_gradients_leave_params_and_inner_state_untouched(case):
    opt = gradtx.apply_if_finite(case.make(case.lr), max_consecutive_errors=3)
    p0 = _params(8)

    @jax.jit
    def step(params, state, t, bad):
        g = {k: (v - 0.5 * jnp.cos(v * (t + 1))).astype(v.dtype) for k, v in params.items()}
        g["w"] = g["w"].at[1, 0].set(jnp.where(jnp.isnan(bad) | jnp.isinf(bad), bad, g["w"][1, 0]))
        u, state = opt.update(g, state, params, **_extra(case, params, g))
        return gradtx.apply_updates(params, u), state

    params, state = p0, opt.init(p0)
    for t in range(2):  # two good steps: the inner state is not the initial one
        params, state = step(params, state, t, jnp.float32(0.0))
    for bad in (np.nan, np.inf, -np.inf):  # three bad steps in a row (allowed: 3)
        new_params, new_state = step(params, state, 2, jnp.float32(bad))
        assert _bits(new_params) == _bits(params), (case.name, bad)
        assert _bits(new_state.inner_state) == _bits(state.inner_state), (case.name, bad)
        params, state = new_params, new_state
    params, state = step(params, state, 2, jnp.float32(0.0))  # training goes on
    assert int(state.notfinite_count) == 0 and _leaves_finite((params, state.inner_state))
