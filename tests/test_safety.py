"""apply_if_finite, zero_nans, skip_not_finite, skip_large_updates: NumPy and optax oracles."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL

import gradtx

P0 = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.3)}


def _grad(t, bad_steps=(), value=np.nan):
    g = {"w": np.array([0.5, -1.0, 2.0]) * (1 + 0.3 * t), "b": np.array(0.1 * t - 0.2)}
    if t in bad_steps:
        g["w"] = g["w"].copy()
        g["w"][1] = value
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), g)


def _train(opt, steps, bad_steps=(), *, jit=True, value=np.nan):
    params, state = P0, opt.init(P0)
    update = jax.jit(opt.update) if jit else opt.update
    history = []
    for t in range(steps):
        u, state = update(_grad(t, bad_steps, value), state, params)
        params = optax.apply_updates(params, u)
        history.append((params, state))
    return history


def _eq(a, b):
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b
    )


def test_nan_step_is_skipped_params_and_inner_state_unchanged_then_training_continues():
    opt = gradtx.apply_if_finite(gradtx.adam(0.1), max_consecutive_errors=3)
    hist = _train(opt, 6, bad_steps=(2,))
    (p1, s1), (p2, s2) = hist[1], hist[2]
    _eq(p1, p2)  # the NaN step moved nothing
    _eq(s1.inner_state, s2.inner_state)  # and left Adam's moments and count alone
    assert (int(s2.notfinite_count), bool(s2.last_finite), int(s2.total_notfinite)) == (1, False, 1)
    s3 = hist[3][1]
    assert (int(s3.notfinite_count), bool(s3.last_finite), int(s3.total_notfinite)) == (0, True, 1)
    # training continued: the result equals plain Adam fed the same gradients minus step 2
    adam, params = gradtx.adam(0.1), P0
    state = adam.init(params)
    for t in [0, 1, 3, 4, 5]:
        u, state = adam.update(_grad(t), state, params)
        params = optax.apply_updates(params, u)
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7),
        hist[-1][0],
        params,
    )
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(hist[-1][0]))


def test_counts_over_a_sequence_of_bad_steps():
    opt = gradtx.apply_if_finite(gradtx.sgd(0.1), max_consecutive_errors=5)
    hist = _train(opt, 8, bad_steps=(1, 2, 4, 5, 6), value=np.inf)
    counts = [int(s.notfinite_count) for _, s in hist]
    totals = [int(s.total_notfinite) for _, s in hist]
    assert counts == [0, 1, 2, 0, 1, 2, 3, 0]
    assert totals == [0, 1, 2, 2, 3, 4, 5, 5]
    assert not any(bool(s.gave_up) for _, s in hist)


@pytest.mark.parametrize("bad", [(2,), (1, 2, 3), (1, 2, 3, 4, 5)])
def test_apply_mode_matches_optax_apply_if_finite(bad):
    ours = gradtx.apply_if_finite(gradtx.adam(0.1), 2, on_max_errors="apply")
    ref = optax.apply_if_finite(optax.adam(0.1), 2)
    h1, h2 = _train(ours, 7, bad), _train(ref, 7, bad)
    for (p1, s1), (p2, s2) in zip(h1, h2, strict=True):
        jax.tree_util.tree_map(
            lambda x, y: np.testing.assert_allclose(
                np.asarray(x),
                np.asarray(y),
                rtol=F32_ORACLE_RTOL,
                atol=F32_ORACLE_ATOL,
                equal_nan=True,
            ),
            p1,
            p2,
        )
        assert int(s1.notfinite_count) == int(s2.notfinite_count)
        assert int(s1.total_notfinite) == int(s2.total_notfinite)
        assert bool(s1.last_finite) == bool(s2.last_finite)


def test_flag_mode_gives_up_by_setting_the_flag_and_keeps_params_finite():
    opt = gradtx.apply_if_finite(gradtx.sgd(0.1), max_consecutive_errors=2)
    hist = _train(opt, 6, bad_steps=(1, 2, 3, 4))
    assert [bool(s.gave_up) for _, s in hist] == [False, False, False, True, True, True]
    _eq(hist[0][0], hist[4][0])  # nothing applied from step 1 to 4
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(hist[-1][0]))


def test_raise_mode_raises_eagerly_and_inside_jit():
    opt = gradtx.apply_if_finite(gradtx.sgd(0.1), max_consecutive_errors=1, on_max_errors="raise")
    _train(opt, 3, bad_steps=(1,), jit=False)  # one bad step is tolerated
    with pytest.raises(FloatingPointError, match="gave up after 2 consecutive"):
        _train(opt, 4, bad_steps=(1, 2), jit=False)
    with pytest.raises(Exception, match="gave up after 2 consecutive"):
        hist = _train(opt, 4, bad_steps=(1, 2), jit=True)
        jax.block_until_ready(hist[-1])


def test_apply_if_finite_jit_equals_eager_and_structure():
    opt = gradtx.apply_if_finite(gradtx.adam(0.05), 3)
    h1, h2 = _train(opt, 5, (1, 3), jit=True), _train(opt, 5, (1, 3), jit=False)
    for (p1, s1), (p2, s2) in zip(h1, h2, strict=True):
        jax.tree_util.tree_map(
            lambda x, y: np.testing.assert_allclose(
                np.asarray(x), np.asarray(y), rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL
            ),
            (p1, s1),
            (p2, s2),
        )
    assert jax.tree_util.tree_structure(h1[-1][0]) == jax.tree_util.tree_structure(P0)


def test_apply_if_finite_argument_errors():
    with pytest.raises(ValueError, match="on_max_errors must be one of"):
        gradtx.apply_if_finite(gradtx.sgd(0.1), 3, on_max_errors="explode")
    with pytest.raises(ValueError, match="max_consecutive_errors"):
        gradtx.apply_if_finite(gradtx.sgd(0.1), -1)


def test_zero_nans_matches_optax():
    ours, ref = gradtx.zero_nans(), optax.zero_nans()
    s1, s2 = ours.init(P0), ref.init(P0)
    for t in range(3):
        g = _grad(t, bad_steps=(1,))
        u1, s1 = jax.jit(ours.update)(g, s1)
        u2, s2 = ref.update(g, s2)
        _eq(u1, u2)
        _eq(s1.found_nan, s2.found_nan)
        if t == 1:
            assert bool(s1.found_nan["w"]) and not bool(s1.found_nan["b"])
            np.testing.assert_array_equal(np.asarray(u1["w"])[1], 0.0)


def test_skip_predicates_match_optax():
    params = P0
    for t, bad in [(0, ()), (1, (1,))]:
        g = _grad(t, bad, value=np.inf)
        a, ia = gradtx.skip_not_finite(g, jnp.int32(t), params)
        b, ib = optax.skip_not_finite(g, jnp.int32(t), params)
        assert bool(a) == bool(b) == bool(bad)
        assert int(ia["num_not_finite"]) == int(ib["num_not_finite"]) == len(bad)
    for thresh in (1.0, 100.0):
        g = _grad(2)
        want = sum(float(np.sum(np.asarray(x) ** 2)) for x in jax.tree_util.tree_leaves(g))
        a, ia = gradtx.skip_large_updates(g, 0, params, max_squared_norm=thresh)
        b, ib = optax.skip_large_updates(g, 0, params, max_squared_norm=thresh)
        assert bool(a) == bool(b) == (want > thresh)
        np.testing.assert_allclose(float(ia["norm_squared"]), want, rtol=1e-6)
        np.testing.assert_allclose(float(ia["norm_squared"]), float(ib["norm_squared"]), rtol=1e-6)
    a, _ = gradtx.skip_large_updates(_grad(0, (0,)), 0, params, max_squared_norm=1e9)
    assert bool(a)  # a NaN norm is skipped


@pytest.mark.parametrize(
    "skip",
    [
        (gradtx.skip_not_finite, optax.skip_not_finite),
        (
            functools.partial(gradtx.skip_large_updates, max_squared_norm=20.0),
            functools.partial(optax.skip_large_updates, max_squared_norm=20.0),
        ),
    ],
)
def test_multisteps_with_skip_predicates_matches_optax(skip):
    ours = gradtx.MultiSteps(gradtx.adam(0.1), 2, should_skip_update_fn=skip[0])
    ref = optax.MultiSteps(optax.adam(0.1), 2, should_skip_update_fn=skip[1])
    h1, h2 = _train(ours, 8, bad_steps=(2, 5)), _train(ref, 8, bad_steps=(2, 5))
    for (p1, s1), (p2, s2) in zip(h1, h2, strict=True):
        jax.tree_util.tree_map(
            lambda x, y: np.testing.assert_allclose(
                np.asarray(x), np.asarray(y), rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL
            ),
            p1,
            p2,
        )
        assert int(s1.mini_step) == int(s2.mini_step)
        assert int(s1.gradient_step) == int(s2.gradient_step)
        for k in s2.skip_state:
            np.testing.assert_allclose(
                np.asarray(s1.skip_state[k]), np.asarray(s2.skip_state[k]), rtol=1e-6
            )


def test_skipped_step_has_the_inner_outputs_dtype_and_low_precision_is_stable():
    to_f32 = optax.stateless(
        lambda u, p: jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), u)
    )
    opt = gradtx.apply_if_finite(to_f32, 2)
    g = jnp.array([1.0, jnp.nan], jnp.bfloat16)
    u, _ = jax.jit(opt.update)(g, opt.init(g))
    assert u.dtype == jnp.float32 and np.asarray(u).tolist() == [0.0, 0.0]
    opt = gradtx.apply_if_finite(gradtx.adam(0.1), 2)
    p = {"w": jnp.ones(3, jnp.bfloat16)}
    s = opt.init(p)
    for g in (jnp.ones(3, jnp.bfloat16), jnp.full(3, jnp.nan, jnp.bfloat16)):
        u, s2 = jax.jit(opt.update)({"w": g}, s, p)
        assert u["w"].dtype == jnp.bfloat16
        assert jax.tree_util.tree_map(lambda x: x.dtype, s2) == jax.tree_util.tree_map(
            lambda x: x.dtype, s
        )
        s = s2
