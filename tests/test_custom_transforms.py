"""Transforms of your own, the optax way: ``GradientTransformation(init_fn, update_fn)``,
``GradientTransformationExtraArgs``, the isinstance checks optax code makes, and the helpers
``with_extra_args_support``, ``stateless_with_tree_map`` and ``init_empty_state``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx


def _momentum_pair(decay=0.5):
    """A hand-written heavy-ball transform as optax users write one: two closures."""

    def init_fn(params):
        return {"m": jax.tree.map(jnp.zeros_like, params)}

    def update_fn(updates, state, params=None):
        m = jax.tree.map(lambda g, m: g + decay * m, updates, state["m"])
        return m, {"m": m}

    return init_fn, update_fn


def _run(tx, steps=5):
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    state = tx.init(params)
    out = []
    for t in range(steps):
        grads = jax.tree.map(lambda p, t=t: (t + 1.0) * p, params)
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        out.append(params)
    return jax.tree.map(lambda *xs: np.stack(xs), *out)


def _numpy_reference(steps=5, decay=0.5, lr=0.1):
    w, b = np.array([1.0, -2.0]), np.array(0.5)
    mw, mb, out = np.zeros(2), np.zeros(()), []
    for t in range(steps):
        mw, mb = (t + 1.0) * w + decay * mw, (t + 1.0) * b + decay * mb
        w, b = w - lr * mw, b - lr * mb
        out.append((w, b))
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def test_a_transform_from_two_functions_chains_and_matches_optax_and_numpy():
    ours = gradtx.chain(gradtx.GradientTransformation(*_momentum_pair()), gradtx.scale(-0.1))
    theirs = optax.chain(optax.GradientTransformation(*_momentum_pair()), optax.scale(-0.1))
    got, want = _run(ours), _run(theirs)
    w, b = _numpy_reference()
    np.testing.assert_allclose(got["w"], w, rtol=1e-6)
    np.testing.assert_allclose(got["b"], b, rtol=1e-6)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)


def test_keyword_construction_jit_and_unpacking():
    init_fn, update_fn = _momentum_pair()
    tx = gradtx.GradientTransformation(init=init_fn, update=update_fn)
    i, u = tx
    assert i.__func__ is type(tx).init and u.__func__ is type(tx).update
    params = {"w": jnp.ones(2), "b": jnp.ones(())}
    state = tx.init(params)
    step = jax.jit(lambda tx, g, s: tx.update(g, s))  # the transform crosses jit as an argument
    updates, state = step(tx, params, state)
    updates, state = step(tx, params, state)
    np.testing.assert_allclose(updates["w"], [1.5, 1.5])


def test_a_plain_update_function_never_sees_extra_arguments():
    seen = []

    def update_fn(updates, state, params=None):
        seen.append("called")
        return updates, state

    tx = gradtx.chain(gradtx.GradientTransformation(lambda p: (), update_fn), gradtx.scale(2.0))
    u, _ = tx.update(jnp.ones(2), tx.init(jnp.ones(2)), value=jnp.asarray(3.0))
    np.testing.assert_allclose(u, [2.0, 2.0])
    assert seen == ["called"]


def test_extra_args_reach_an_extra_args_transform():
    def update_fn(updates, state, params=None, *, value, **extra):
        return jax.tree.map(lambda g: value * g, updates), state

    tx = gradtx.chain(
        gradtx.GradientTransformationExtraArgs(gradtx.init_empty_state, update_fn),
        gradtx.scale(-1.0),
    )
    u, _ = tx.update(jnp.array([1.0, 2.0]), tx.init(None), value=jnp.asarray(3.0))
    np.testing.assert_allclose(u, [-3.0, -6.0])


def test_isinstance_as_optax_code_checks_it():
    plain = gradtx.GradientTransformation(*_momentum_pair())
    extra = gradtx.GradientTransformationExtraArgs(
        gradtx.init_empty_state, lambda u, s, p=None: (u, s)
    )
    for tx in (gradtx.adam(1e-3), gradtx.chain(gradtx.clip(1.0), gradtx.sgd(0.1)), extra):
        assert isinstance(tx, gradtx.GradientTransformation)
        assert isinstance(tx, gradtx.GradientTransformationExtraArgs)
    assert isinstance(plain, gradtx.GradientTransformation)
    assert not isinstance(plain, gradtx.GradientTransformationExtraArgs)
    assert not isinstance(optax.adam(1e-3), gradtx.GradientTransformation)


def test_with_extra_args_support_drops_what_a_plain_update_cannot_take():
    plain = gradtx.GradientTransformation(lambda p: (), lambda u, s, p=None: (-u, s))
    wrapped = gradtx.with_extra_args_support(plain)
    assert isinstance(wrapped, gradtx.GradientTransformationExtraArgs)
    np.testing.assert_allclose(wrapped.update(jnp.ones(2), (), value=1.0)[0], [-1.0, -1.0])
    adam = gradtx.adam(1e-3)
    assert gradtx.with_extra_args_support(adam) is adam
    sgd = gradtx.with_extra_args_support(optax.sgd(0.5))
    p = jnp.ones(2)
    np.testing.assert_allclose(sgd.update(p, sgd.init(p), value=1.0)[0], [-0.5, -0.5])


def test_stateless_with_tree_map_matches_optax_with_and_without_params():
    f = lambda g, p: g * 2.0 if p is None else g * p  # noqa: E731
    ours, theirs = gradtx.stateless_with_tree_map(f), optax.stateless_with_tree_map(f)
    g = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    p = {"a": jnp.array([0.5, -1.0]), "b": jnp.array(2.0)}
    for params in (None, p):
        got = ours.update(g, ours.init(p), params)[0]
        want = theirs.update(g, theirs.init(p), params)[0]
        for k in g:
            np.testing.assert_allclose(got[k], want[k])
    np.testing.assert_allclose(ours.update(g, (), p)[0]["a"], [0.5, -2.0])
    with pytest.raises(ValueError, match="stateless_with_tree_map"):
        ours.update(g, (), {"a": p["a"]})


def test_bad_functions_are_refused_naming_the_constructor():
    with pytest.raises(TypeError, match="GradientTransformation: update must be callable"):
        gradtx.GradientTransformation(lambda p: (), 3)
    with pytest.raises(TypeError, match="GradientTransformationExtraArgs: init must be callable"):
        gradtx.GradientTransformationExtraArgs(None, lambda u, s, p=None: (u, s))
