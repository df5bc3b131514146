"""conditionally_transform/mask, flatten, centralize, keep_params_nonnegative and monitor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import count_compilations, random_problem

import gradtx


def _np(tree):
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


def _jx(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _problem(seed=0):
    params, grad = random_problem(seed, dtype=np.float32)
    return _jx(params), grad


def _run(opt, params, grad, steps, *, jit=True, **extra):
    state = opt.init(params)
    update = jax.jit(opt.update) if jit else opt.update
    for t in range(steps):
        u, state = update(_jx(grad(_np(params), t)), state, params, **extra)
        params = optax.apply_updates(params, u)
    return params, state


def _close(a, b, rtol=1e-6, atol=1e-7):
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol),
        a,
        b,
    )


PAIRS = {
    "conditionally_transform": (
        lambda: gradtx.chain(
            gradtx.conditionally_transform(gradtx.scale_by_adam(), lambda s: s % 3 != 1),
            gradtx.scale(-0.05),
        ),
        lambda: optax.chain(
            optax.conditionally_transform(optax.scale_by_adam(), lambda s: s % 3 != 1),
            optax.scale(-0.05),
        ),
    ),
    "conditionally_mask": (
        lambda: gradtx.conditionally_mask(gradtx.adam(0.05), lambda s: s >= 2),
        lambda: optax.conditionally_mask(optax.adam(0.05), lambda s: s >= 2),
    ),
    "flatten": (
        lambda: gradtx.flatten(gradtx.adam(0.05)),
        lambda: optax.flatten(optax.adam(0.05)),
    ),
    "centralize": (
        lambda: gradtx.chain(gradtx.centralize(), gradtx.sgd(0.1)),
        lambda: optax.chain(optax.centralize(), optax.sgd(0.1)),
    ),
    "keep_params_nonnegative": (
        lambda: gradtx.chain(gradtx.sgd(0.3), gradtx.keep_params_nonnegative()),
        lambda: optax.chain(optax.sgd(0.3), optax.keep_params_nonnegative()),
    ),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_optax_parity_jit_equals_eager_and_structure(name):
    ours, ref = PAIRS[name]
    params, grad = _problem(1)
    if name == "keep_params_nonnegative":
        params = jax.tree_util.tree_map(jnp.abs, params)
    p1, s1 = _run(ours(), params, grad, 6)
    p2, _ = _run(ref(), params, grad, 6)
    _close(p1, p2)
    p3, s3 = _run(ours(), params, grad, 6, jit=False)
    _close((p1, s1), (p3, s3))
    assert jax.tree_util.tree_structure(p1) == jax.tree_util.tree_structure(params)


def test_conditionally_transform_passes_through_and_mask_zeroes_when_off():
    g = jnp.array([1.0, -2.0])
    tx = gradtx.conditionally_transform(gradtx.scale_by_adam(), lambda s: s == 1)
    s = tx.init(g)
    u, s = tx.update(g, s)  # step 0: off, unchanged
    np.testing.assert_array_equal(np.asarray(u), [1.0, -2.0])
    assert int(s.inner_state.count) == 0
    u, s = tx.update(g, s)  # step 1: Adam's first step, ±1
    np.testing.assert_allclose(np.asarray(u), [1.0, -1.0], rtol=1e-4)
    tx = gradtx.conditionally_mask(gradtx.scale_by_adam(), lambda s: s == 1)
    u, s = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(np.asarray(u), [0.0, 0.0])
    assert int(s.inner_state.count) == 0 and int(s.step) == 1


def test_conditionally_transform_forwards_extra_args():
    tx = gradtx.conditionally_transform(
        gradtx.scale(2.0), lambda s, loss: loss < 1.0, forward_extra_args=True
    )
    s = tx.init(jnp.zeros(1))
    u, s = jax.jit(tx.update)(jnp.ones(1), s, loss=jnp.float32(5.0))
    assert float(u[0]) == 1.0
    u, s = jax.jit(tx.update)(jnp.ones(1), s, loss=jnp.float32(0.5))
    assert float(u[0]) == 2.0


def test_flatten_equals_the_element_wise_optimizer_and_keeps_one_flat_state():
    params, grad = _problem(2)
    p1, s1 = _run(gradtx.flatten(gradtx.adam(0.05)), params, grad, 5)
    p2, _ = _run(gradtx.adam(0.05), params, grad, 5)
    _close(p1, p2)
    assert s1[0].mu.shape == (3 * 4 + 4 + 1,)


def test_centralize_equals_numpy():
    rng = np.random.default_rng(0)
    g = {"k": rng.normal(size=(3, 4, 2)), "m": rng.normal(size=(3, 5)), "v": rng.normal(size=4)}
    u, _ = gradtx.centralize().update(_jx(g), gradtx.EmptyState())
    want = {
        "k": g["k"] - g["k"].mean(axis=(1, 2), keepdims=True),
        "m": g["m"] - g["m"].mean(axis=1, keepdims=True),
        "v": g["v"],
    }
    _close(u, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(u["m"]).sum(axis=1), 0.0, atol=1e-6)


def test_keep_params_nonnegative_equals_numpy_and_params_stay_nonnegative():
    p = jnp.array([1.0, 0.5, 2.0])
    u, _ = gradtx.keep_params_nonnegative().update(jnp.array([-3.0, 0.1, -0.5]), None, p)
    np.testing.assert_allclose(np.asarray(u), [-1.0, 0.1, -0.5], rtol=1e-7)
    params, grad = _problem(3)
    params = jax.tree_util.tree_map(jnp.abs, params)
    out, _ = _run(PAIRS["keep_params_nonnegative"][0](), params, grad, 10)
    assert all(np.all(np.asarray(x) >= 0) for x in jax.tree_util.tree_leaves(out))
    with pytest.raises(ValueError, match="needs params"):
        gradtx.keep_params_nonnegative().update(jnp.ones(1), None)


def test_monitor_records_the_norms_and_does_not_change_updates():
    params, grad = _problem(4)
    g = _jx(grad(_np(params), 0))
    opt = gradtx.monitor(gradtx.adam(0.05))
    u, s = jax.jit(opt.update)(g, opt.init(params), params)
    u_ref, _ = gradtx.adam(0.05).update(g, gradtx.adam(0.05).init(params), params)
    _close(u, u_ref, rtol=1e-6, atol=1e-8)
    norm = lambda t: np.sqrt(
        sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree_util.tree_leaves(t))
    )
    np.testing.assert_allclose(float(s.grad_norm), norm(g), rtol=1e-6)
    np.testing.assert_allclose(float(s.update_norm), norm(u_ref), rtol=1e-6)
    assert int(s.count) == 1
    # inserted in a chain: records what passes through at that point, without splitting it
    chained = gradtx.named_chain(
        ("clip", gradtx.clip_by_global_norm(0.5)),
        ("after_clip", gradtx.monitor()),
        ("sgd", gradtx.sgd(0.1)),
    )
    u2, s2 = chained.update(g, chained.init(params), params)
    np.testing.assert_allclose(float(s2["after_clip"].grad_norm), min(norm(g), 0.5), rtol=1e-5)
    np.testing.assert_allclose(float(s2["after_clip"].update_norm), min(norm(g), 0.5), rtol=1e-5)
    np.testing.assert_allclose(norm(u2), 0.1 * min(norm(g), 0.5), rtol=1e-5)


def test_optax_members_inside_wrappers():
    params, grad = _problem(5)
    p1, _ = _run(gradtx.monitor(optax.adam(0.05)), params, grad, 3)
    p2, _ = _run(optax.adam(0.05), params, grad, 3)
    _close(p1, p2, rtol=0, atol=0)
    with pytest.raises(TypeError, match="should_transform_fn must be callable"):
        gradtx.conditionally_mask(gradtx.sgd(0.1), 3)


def _even(step):
    return step % 2 == 0


def _after_first(step):
    return step > 0


WRAPPED = {  # static parts (predicates, masks, labels) are the same objects for every lr
    "conditionally_transform": lambda lr: gradtx.conditionally_transform(gradtx.adam(lr), _even),
    "conditionally_mask": lambda lr: gradtx.conditionally_mask(gradtx.adam(lr), _after_first),
    "flatten": lambda lr: gradtx.flatten(gradtx.adam(lr)),
    "monitor": lambda lr: gradtx.monitor(gradtx.adam(lr)),
    "apply_if_finite": lambda lr: gradtx.apply_if_finite(gradtx.adam(lr), 3),
    "MultiSteps": lambda lr: gradtx.MultiSteps(gradtx.adam(lr), 2),
    "masked": lambda lr: gradtx.masked(gradtx.adam(lr), {"dense": True, "scale": False}),
    "partition": lambda lr: gradtx.partition(
        {"a": gradtx.adam(lr), "b": gradtx.sgd(lr)}, {"dense": "a", "scale": "b"}
    ),
    "param_ema": lambda lr: gradtx.param_ema(gradtx.adam(lr), 0.9),
    "swa": lambda lr: gradtx.swa(gradtx.adam(lr)),
}


@pytest.mark.parametrize("name", sorted(WRAPPED))
def test_hyperparameters_stay_leaves_through_wrappers(name):
    """A jitted step taking the wrapper as an argument compiles once for every learning rate,
    and vmap over the learning rate equals separate runs."""
    make = WRAPPED[name]
    params, grad = _problem(6)
    g = _jx(grad(_np(params), 0))

    @jax.jit
    def two_steps(opt, params):
        state = opt.init(params)
        u, state = opt.update(g, state, params)
        params = optax.apply_updates(params, u)
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u)

    two_steps(make(0.1), params)
    with count_compilations() as c:
        out = two_steps(make(0.2), params)
    assert c["n"] == 0
    lrs = jnp.array([0.1, 0.2])
    swept = jax.vmap(lambda lr: two_steps(make(lr), params))(lrs)
    _close(jax.tree_util.tree_map(lambda x: x[1], swept), out)
    assert not np.allclose(np.asarray(swept["dense"]["w"][0]), np.asarray(swept["dense"]["w"][1]))


def test_monitor_measures_match_optax_monitor():
    params, grad = _problem(7)
    measures = {
        "norm": optax.tree.norm,
        "max_abs": lambda u: optax.tree.max(jax.tree_util.tree_map(jnp.abs, u)),
    }
    ours = gradtx.chain(gradtx.sgd(0.1, momentum=0.9), gradtx.monitor(measures=measures))
    ref = optax.chain(optax.sgd(0.1, momentum=0.9), optax.monitor(measures))
    s1, s2 = ours.init(params), ref.init(params)
    for t in range(3):
        g = _jx(grad(_np(params), t))
        u1, s1 = jax.jit(ours.update)(g, s1, params)
        u2, s2 = ref.update(g, s2, params)
        _close(u1, u2)
        for k in measures:
            _close(s1[1].measurements[k], optax.tree.get(s2, k))
        _close(s1[1].grad_norm, optax.tree.get(s2, "norm"))
        params = optax.apply_updates(params, u1)
    with pytest.raises(TypeError, match="measures must be a dict"):
        gradtx.monitor(measures=[len])


@pytest.mark.parametrize("mask", [{"dense": {"w": True, "b": False}, "scale": False}, True, False])
def test_freeze_matches_optax_freeze(mask):
    params, grad = _problem(8)
    p1, _ = _run(gradtx.chain(gradtx.freeze(mask), gradtx.adam(0.1)), params, grad, 3)
    p2, _ = _run(optax.chain(optax.freeze(mask), optax.adam(0.1)), params, grad, 3)
    _close(p1, p2)
