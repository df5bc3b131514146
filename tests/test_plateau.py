"""reduce_on_plateau: exact reduction steps from the patience rules (positive, negative and
zero-plateau losses, cooldown, min_scale, accumulation), a plain NumPy rule-follower on random
loss curves, and optax.contrib.reduce_on_plateau where the behaviour is the same (positive
losses)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import count_compilations

import gradtx

PARAMS = {"w": np.zeros(3), "b": np.zeros(())}


def np_plateau(values, factor=0.1, patience=10, rtol=1e-4, atol=0.0, cooldown=0,
               accumulation_size=1, min_scale=0.0):  # fmt: skip
    """The scale in force after each value, following the rules of the docstring literally."""
    best, plateau, cool, scale, acc, out = np.inf, 0, 0, 1.0, [], []
    for v in values:
        acc.append(v)
        if len(acc) == accumulation_size:
            avg = float(np.mean(acc))
            acc = []
            if best == np.inf or avg < best - rtol * abs(best) - atol:
                best, plateau = avg, 0
            else:
                plateau += 1
            if cool > 0:
                cool, plateau = cool - 1, 0
            else:
                if plateau >= patience:
                    scale, plateau, cool = scale * factor, 0, cooldown
                scale = max(scale, min_scale)
        out.append(scale)
    return np.array(out)


def run(values, tx, params=PARAMS):
    """Scales applied by ``tx`` to unit updates at each step (one jitted scan)."""

    def body(state, v):
        ones = jax.tree_util.tree_map(jnp.ones_like, params)
        u, state = tx.update(ones, state, params, value=v)
        return state, u["w"][0]

    values = jnp.asarray(values)
    return np.asarray(jax.jit(lambda vs: jax.lax.scan(body, tx.init(params), vs)[1])(values))


def reductions(scales):
    return [i for i in range(len(scales)) if scales[i] < (scales[i - 1] if i else 1.0)]


def test_patience_counts_evaluations_without_improvement(x64):
    tx = gradtx.reduce_on_plateau(factor=0.5, patience=3)
    scales = run([10.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 8.0, 8.0], tx)
    # 9 is best from step 1; steps 2, 3, 4 do not improve -> reduce at 4; again at 7;
    # 8 improves at step 8 and resets the count.
    np.testing.assert_array_equal(scales, [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25])


def test_negative_loss_must_decrease_to_improve(x64):
    tx = gradtx.reduce_on_plateau(factor=0.5, patience=2, rtol=1e-4)
    # From -2, a loss of -1.9999 is *worse*: it must not count as an improvement (a test
    # written as v < (1 - rtol) * best would accept it, since (1 - rtol) * -2 = -1.9998).
    scales = run([-1.0, -2.0, -1.9999, -1.9999, -1.9999, -1.9999], tx)
    assert reductions(scales) == [3, 5]
    # A steadily decreasing negative loss never reduces, even with patience 1.
    tx1 = gradtx.reduce_on_plateau(factor=0.5, patience=1, rtol=1e-4)
    assert reductions(run([-1.0, -2.0, -3.0, -4.0, -5.0], tx1)) == []
    # Improvement by less than rtol * |best| does not count.
    assert reductions(run([-100.0, -100.005, -100.005], tx1)) == [1, 2]


def test_loss_plateauing_at_zero(x64):
    tx = gradtx.reduce_on_plateau(factor=0.5, patience=2, rtol=1e-4, atol=0.0)
    scales = run([1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0], tx)
    assert reductions(scales) == [4, 6]
    np.testing.assert_array_equal(scales[-1], 0.25)
    # Only atol: a loss that keeps falling by less than atol near 0 plateaus too.
    tx_a = gradtx.reduce_on_plateau(factor=0.5, patience=2, rtol=0.0, atol=1e-3)
    assert reductions(run([1e-3, 5e-4, 1e-4, 0.0, 0.0], tx_a)) == [2, 4]


def test_cooldown_and_min_scale(x64):
    tx = gradtx.reduce_on_plateau(factor=0.1, patience=1, cooldown=2)
    scales = run([1.0] * 9, tx)
    assert reductions(scales) == [1, 4, 7]
    tx = gradtx.reduce_on_plateau(factor=0.1, patience=1, min_scale=0.05)
    np.testing.assert_allclose(run([1.0] * 5, tx), [1, 0.1, 0.05, 0.05, 0.05])


def test_accumulation_averages_values(x64):
    tx = gradtx.reduce_on_plateau(factor=0.5, patience=1, accumulation_size=3)
    # Averages: 2 (best), then (3 + 1 + 2) / 3 = 2 -> no improvement -> reduce at step 5.
    scales = run([1.0, 2.0, 3.0, 3.0, 1.0, 2.0, 0.0, 0.0, 0.0], tx)
    np.testing.assert_array_equal(scales, [1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5])


SETTINGS = [
    dict(factor=0.5, patience=3),
    dict(factor=0.3, patience=2, cooldown=3, rtol=1e-3),
    dict(factor=0.5, patience=1, atol=0.01, rtol=0.0, min_scale=0.1),
    dict(factor=0.7, patience=1, accumulation_size=4, cooldown=1),
]


def _curve(seed, n=200, offset=0.0):
    rng = np.random.default_rng(seed)
    base = np.maximum(np.linspace(2.0, 0.2, n), 0.5)  # falls, then plateaus at 0.5
    return base + 0.02 * rng.normal(size=n) + offset


@pytest.mark.parametrize("settings", SETTINGS)
def test_random_curves_follow_the_rules(settings, x64):
    tx = gradtx.reduce_on_plateau(**settings)
    for seed, offset in [(0, 0.0), (1, -3.0), (2, -0.5)]:  # positive, negative, crossing 0
        values = _curve(seed, offset=offset)
        got = run(values, tx)
        want = np_plateau(values, **settings)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert len(reductions(want)) >= 2  # the curve exercises the rules


@pytest.mark.parametrize("settings", SETTINGS)
def test_matches_optax_for_positive_losses(settings, x64):
    values = _curve(4)
    ours = gradtx.reduce_on_plateau(**settings)
    theirs = optax.contrib.reduce_on_plateau(**settings)

    def states(tx):
        def body(s, v):
            _, s = tx.update(PARAMS, s, PARAMS, value=v)
            return s, s

        return jax.jit(lambda vs: jax.lax.scan(body, tx.init(PARAMS), vs)[1])(values)

    s1, s2 = states(ours), states(theirs)
    for field in ("scale", "best_value", "plateau_count", "cooldown_count", "count"):
        np.testing.assert_allclose(
            np.asarray(getattr(s1, field)), np.asarray(getattr(s2, field)), rtol=1e-12
        )
    assert len(reductions(np.asarray(s1.scale))) >= 2


def test_in_a_chain_under_jit_and_no_recompile_for_new_patience():
    params = {"w": jnp.ones(2)}

    @jax.jit
    def go(opt, values):
        def body(carry, v):
            p, s = carry
            u, s = opt.update({"w": jnp.ones(2)}, s, p, value=v)
            return (gradtx.apply_updates(p, u), s), gradtx.hyperparams(opt, s)["scale"]

        return jax.lax.scan(body, (params, opt.init(params)), values)[1]

    values = jnp.asarray([3.0, 2.0] + [2.0] * 8)
    opt = gradtx.chain(gradtx.sgd(0.1), gradtx.reduce_on_plateau(factor=0.5, patience=4))
    got = go(opt, values)
    np.testing.assert_allclose(np.asarray(got), np_plateau(np.asarray(values), 0.5, 4))
    with count_compilations() as n:
        got = go(gradtx.replace(opt, patience=2), values)
    assert n["n"] == 0
    np.testing.assert_allclose(np.asarray(got), np_plateau(np.asarray(values), 0.5, 2))


def test_dtypes_follow_updates():
    p = {"w": jnp.zeros(2, jnp.bfloat16)}
    tx = gradtx.reduce_on_plateau(factor=0.5, patience=1)
    s = tx.init(p)
    for _ in range(3):
        u, s = tx.update({"w": jnp.ones(2, jnp.bfloat16)}, s, p, value=jnp.float32(1.0))
    assert u["w"].dtype == jnp.bfloat16 and s.scale.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(u["w"], np.float32), 0.25)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(factor=1.0), "factor"),
        (dict(factor=0.0), "factor"),
        (dict(patience=0), "patience"),
        (dict(patience=2.5), "patience"),
        (dict(rtol=-1e-3), "rtol"),
        (dict(rtol=1.5), "rtol"),
        (dict(atol=-1.0), "atol"),
        (dict(rtol=0.0, atol=0.0), "rtol and atol"),
        (dict(cooldown=-1), "cooldown"),
        (dict(accumulation_size=0), "accumulation_size"),
        (dict(min_scale=-0.1), "min_scale"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gradtx.reduce_on_plateau(**kwargs)


def test_update_needs_value():
    tx = gradtx.reduce_on_plateau()
    with pytest.raises(ValueError, match="value=loss"):
        tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}))
