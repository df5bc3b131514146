"""conditionally_transform/mask, flatten, centralize, keep_params_nonnegative, monitor_norms,
and optax's monitoring (snapshot, monitor, measure_with_ema); and every wrapper of issue 4: jit
equals eager, structure and dtypes preserved, optax parity (numbers and state layout)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL, count_compilations, random_problem

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


def _close(a, b, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL):
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol),
        a,
        b,
    )


class Case(NamedTuple):
    """One wrapper in :data:`EVERY_WRAPPER`: how to build it (and optax's equivalent)."""

    ours: Callable[[], Any]
    ref: Callable[[], Any] | None = None  # optax's equivalent, where optax has one
    nan_at: int | None = None  # inject a NaN/Inf into the gradient at this step
    nonneg: bool = False  # start from |params|
    lookahead: bool = False  # params are (fast, slow) pairs
    layout: bool = True  # the state has optax's layout (class names, fields, keys)
    # An Inf gradient reaches Adam: optax's ν overflows too and its step is inf/inf = NaN,
    # gradtx's ν saturates (README, Guarantees) and the step is ±inf. Both are non-finite at
    # the same places; the finite entries agree.
    same_nonfinite: bool = False


_GROUP_LABELS = {"dense": {"w": "default", "b": "group0"}, "scale": "default"}
_FREEZE = {"dense": {"w": False, "b": True}, "scale": False}


def _labels_of(params):
    return {"dense": {"w": "a", "b": "b"}, "scale": "a"}


def _skip_large(updates, step, params):
    return gradtx.skip_large_updates(updates, step, params, max_squared_norm=28.0)


def _optax_skip_large(updates, step, params):
    return optax.skip_large_updates(updates, step, params, max_squared_norm=28.0)


EVERY_WRAPPER = {  # every wrapper of issue 4
    "conditionally_transform": Case(
        lambda: gradtx.chain(
            gradtx.conditionally_transform(gradtx.scale_by_adam(), lambda s: s % 3 != 1),
            gradtx.scale(-0.05),
        ),
        lambda: optax.chain(
            optax.conditionally_transform(optax.scale_by_adam(), lambda s: s % 3 != 1),
            optax.scale(-0.05),
        ),
    ),
    "conditionally_mask": Case(
        lambda: gradtx.conditionally_mask(gradtx.adam(0.05), lambda s: s >= 2),
        lambda: optax.conditionally_mask(optax.adam(0.05), lambda s: s >= 2),
    ),
    "flatten": Case(
        lambda: gradtx.flatten(gradtx.adam(0.05)), lambda: optax.flatten(optax.adam(0.05))
    ),
    "centralize": Case(
        lambda: gradtx.chain(gradtx.centralize(), gradtx.sgd(0.1)),
        lambda: optax.chain(optax.centralize(), optax.sgd(0.1)),
    ),
    "keep_params_nonnegative": Case(
        lambda: gradtx.chain(gradtx.sgd(0.3), gradtx.keep_params_nonnegative()),
        lambda: optax.chain(optax.sgd(0.3), optax.keep_params_nonnegative()),
        nonneg=True,
    ),
    "monitor_norms": Case(  # records norms, never changes the updates: equals plain Adam
        lambda: gradtx.monitor_norms(
            gradtx.adam(0.05), measures={"max": lambda u: optax.tree.max(u)}
        ),
        lambda: optax.adam(0.05),
        layout=False,  # no optax equivalent: the reference is the plain optimizer
    ),
    "monitor_norms_in_chain": Case(
        lambda: gradtx.chain(
            gradtx.clip_by_global_norm(2.0), gradtx.monitor_norms(), gradtx.sgd(0.1)
        ),
        lambda: optax.chain(optax.clip_by_global_norm(2.0), optax.sgd(0.1)),
        layout=False,  # no optax equivalent
    ),
    "monitor": Case(  # optax's monitor: measures recorded, updates unchanged
        lambda: gradtx.chain(
            gradtx.monitor(
                {
                    "norm": optax.tree.norm,
                    "ema": gradtx.measure_with_ema(lambda u: optax.tree.norm(u) > 3.0, 0.9),
                }
            ),
            gradtx.sgd(0.1),
        ),
        lambda: optax.chain(
            optax.monitor(
                {
                    "norm": optax.tree.norm,
                    "ema": optax.measure_with_ema(lambda u: optax.tree.norm(u) > 3.0, 0.9),
                }
            ),
            optax.sgd(0.1),
        ),
    ),
    "snapshot": Case(
        lambda: gradtx.chain(gradtx.snapshot("n", optax.tree.norm), gradtx.sgd(0.1)),
        lambda: optax.chain(optax.snapshot("n", optax.tree.norm), optax.sgd(0.1)),
    ),
    "selective_transform": Case(
        lambda: gradtx.selective_transform(gradtx.adam(0.1), freeze_mask=_FREEZE),
        lambda: optax.selective_transform(optax.adam(0.1), freeze_mask=_FREEZE),
    ),
    "freeze": Case(
        lambda: gradtx.chain(gradtx.freeze(_FREEZE), gradtx.adam(0.1)),
        lambda: optax.chain(optax.freeze(_FREEZE), optax.adam(0.1)),
    ),
    "param_groups": Case(
        lambda: gradtx.param_groups(
            gradtx.adamw,
            [gradtx.group("*b", weight_decay=0.0, learning_rate=0.025)],
            default=True,
            learning_rate=0.05,
            weight_decay=0.01,
        ),
        lambda: optax.partition(
            {
                "group0": optax.adamw(0.025, weight_decay=0.0),
                "default": optax.adamw(0.05, weight_decay=0.01),
            },
            _GROUP_LABELS,
        ),
    ),
    "partition": Case(
        lambda: gradtx.partition(
            {"a": gradtx.adam(0.05), "b": gradtx.sgd(0.05, momentum=0.9)},
            {"dense": "a", "scale": "b"},
        ),
        lambda: optax.partition(
            {"a": optax.adam(0.05), "b": optax.sgd(0.05, momentum=0.9)},
            {"dense": "a", "scale": "b"},
        ),
        layout=False,  # gradtx's TraceState has a count field (for scheduled decay)
    ),
    "partition_adam_sgd": Case(
        lambda: gradtx.partition(
            {"a": gradtx.adam(0.05), "b": gradtx.sgd(0.05)}, {"dense": "a", "scale": "b"}
        ),
        lambda: optax.partition(
            {"a": optax.adam(0.05), "b": optax.sgd(0.05)}, {"dense": "a", "scale": "b"}
        ),
    ),
    "multi_transform": Case(  # labels from a function of the params
        lambda: gradtx.multi_transform({"a": gradtx.adam(0.05), "b": gradtx.sgd(0.05)}, _labels_of),
        lambda: optax.multi_transform({"a": optax.adam(0.05), "b": optax.sgd(0.05)}, _labels_of),
    ),
    "masked": Case(
        lambda: gradtx.chain(
            gradtx.masked(gradtx.scale_by_adam(), {"dense": True, "scale": False}),
            gradtx.scale(-0.05),
        ),
        lambda: optax.chain(
            optax.masked(optax.scale_by_adam(), {"dense": True, "scale": False}),
            optax.scale(-0.05),
        ),
    ),
    "MultiSteps": Case(
        lambda: gradtx.MultiSteps(gradtx.adam(0.05), 2),
        lambda: optax.MultiSteps(optax.adam(0.05), 2),
    ),
    "apply_every": Case(
        lambda: gradtx.chain(gradtx.sgd(0.1), gradtx.apply_every(2)),
        lambda: optax.chain(optax.sgd(0.1), optax.apply_every(2)),
        layout=False,  # optax names its state ApplyEvery
    ),
    "apply_if_finite": Case(
        lambda: gradtx.apply_if_finite(gradtx.adam(0.05), 3),
        lambda: optax.apply_if_finite(optax.adam(0.05), 3),
        nan_at=2,
        layout=False,  # gradtx's state also has gave_up (on_max_errors="flag")
    ),
    "zero_nans": Case(
        lambda: gradtx.chain(gradtx.zero_nans(), gradtx.adam(0.05)),
        lambda: optax.chain(optax.zero_nans(), optax.adam(0.05)),
        nan_at=2,
        same_nonfinite=True,
    ),
    "skip_not_finite": Case(
        lambda: gradtx.MultiSteps(
            gradtx.adam(0.05), 2, should_skip_update_fn=gradtx.skip_not_finite
        ),
        lambda: optax.MultiSteps(optax.adam(0.05), 2, should_skip_update_fn=optax.skip_not_finite),
        nan_at=2,
    ),
    "skip_large_updates": Case(
        lambda: gradtx.MultiSteps(gradtx.adam(0.05), 2, should_skip_update_fn=_skip_large),
        lambda: optax.MultiSteps(optax.adam(0.05), 2, should_skip_update_fn=_optax_skip_large),
    ),
    "param_ema": Case(lambda: gradtx.param_ema(gradtx.adam(0.05), 0.9)),
    "swa": Case(lambda: gradtx.swa(gradtx.adam(0.05), start=2, every=2)),
    "lookahead": Case(
        lambda: gradtx.lookahead(gradtx.adam(0.05), sync_period=2, slow_step_size=0.5),
        lambda: optax.lookahead(optax.adam(0.05), sync_period=2, slow_step_size=0.5),
        lookahead=True,
    ),
    "add_noise": Case(lambda: gradtx.chain(gradtx.add_noise(0.01, 0.55, key=0), gradtx.sgd(0.1))),
}


def _spec(tree):
    """Tree structure plus the shape and dtype of every leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, [(np.shape(x), jnp.result_type(x)) for x in leaves]


def _drive(case, opt, lookahead_params, params, grad, steps, *, jit, check_state=True):
    """Step ``opt``; check at every step that the updates have the structure and dtypes of
    the params and (with ``check_state``) that the state keeps the structure, shapes and dtypes
    of ``init``'s (optax's monitor does not: its measurements appear on the first update)."""
    if case.lookahead:
        params = lookahead_params.init_synced(params)
    state = opt.init(params)
    state_spec = _spec(state)
    update = jax.jit(opt.update) if jit else opt.update
    for t in range(steps):
        g = _jx(grad(_np(params.fast if case.lookahead else params), t))
        if t == case.nan_at:
            g["dense"]["w"] = g["dense"]["w"].at[0, 1].set(jnp.nan)
            g["scale"] = jnp.float32(jnp.inf)
        u, state = update(g, state, params)
        assert _spec(u) == _spec(params), t
        assert not check_state or _spec(state) == state_spec, t
        params = optax.apply_updates(params, u)
    return params, state


def _layout(tree):
    """The tree structure as text: record class names, fields, keys and leaf positions, so the
    states of two libraries (different classes of the same name) can be compared."""
    return str(jax.tree_util.tree_structure(tree))


def _compare(a, b):
    """Leaf-wise closeness (exact for integer, bool and key leaves; NaNs equal)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", sorted(EVERY_WRAPPER))
def test_every_wrapper_jit_equals_eager_preserves_structure_and_matches_optax(name):
    case = EVERY_WRAPPER[name]
    params, grad = _problem(1)
    if case.nonneg:
        params = jax.tree_util.tree_map(jnp.abs, params)
    run = lambda opt, lp, jit, check=True: _drive(
        case, opt, lp, params, grad, 5, jit=jit, check_state=check
    )
    p1, s1 = run(case.ours(), gradtx.LookaheadParams, True)
    p2, s2 = run(case.ours(), gradtx.LookaheadParams, False)
    assert jax.tree_util.tree_structure(s1) == jax.tree_util.tree_structure(s2)
    _compare((p1, s1), (p2, s2))
    start = gradtx.LookaheadParams.init_synced(params) if case.lookahead else params
    assert jax.tree_util.tree_structure(p1) == jax.tree_util.tree_structure(start)
    moved = [
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(*map(jax.tree_util.tree_leaves, (p1, start)), strict=True)
    ]
    assert any(moved)  # the steps did something
    if case.ref is not None:
        p3, s3 = run(case.ref(), optax.LookaheadParams, True, False)
        # after an update the states have optax's layout (same record names, keys, leaves)
        if case.layout:
            assert _layout(s1) == _layout(s3), name
        a, b = (tuple(p1), tuple(p3)) if case.lookahead else (p1, p3)
        if case.same_nonfinite:
            fin = jax.tree_util.tree_map(lambda x: np.isfinite(np.asarray(x)), a)
            assert jax.tree_util.tree_all(
                jax.tree_util.tree_map(lambda f, y: np.array_equal(f, np.isfinite(y)), fin, b)
            )
            a, b = (jax.tree_util.tree_map(lambda x, f: np.where(f, x, 0), t, fin) for t in (a, b))
        _close(a, b)


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
    out, _ = _run(EVERY_WRAPPER["keep_params_nonnegative"].ours(), params, grad, 10)
    assert all(np.all(np.asarray(x) >= 0) for x in jax.tree_util.tree_leaves(out))
    with pytest.raises(ValueError, match="needs params"):
        gradtx.keep_params_nonnegative().update(jnp.ones(1), None)


def test_monitor_norms_records_the_norms_and_does_not_change_updates():
    params, grad = _problem(4)
    g = _jx(grad(_np(params), 0))
    opt = gradtx.monitor_norms(gradtx.adam(0.05))
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
        ("after_clip", gradtx.monitor_norms()),
        ("sgd", gradtx.sgd(0.1)),
    )
    u2, s2 = chained.update(g, chained.init(params), params)
    np.testing.assert_allclose(float(s2["after_clip"].grad_norm), min(norm(g), 0.5), rtol=1e-5)
    np.testing.assert_allclose(float(s2["after_clip"].update_norm), min(norm(g), 0.5), rtol=1e-5)
    np.testing.assert_allclose(norm(u2), 0.1 * min(norm(g), 0.5), rtol=1e-5)


def test_optax_members_inside_wrappers():
    params, grad = _problem(5)
    p1, _ = _run(gradtx.monitor_norms(optax.adam(0.05)), params, grad, 3)
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
    "monitor_norms": lambda lr: gradtx.monitor_norms(gradtx.adam(lr)),
    "monitor": lambda lr: gradtx.chain(
        gradtx.monitor({"ema": gradtx.measure_with_ema(optax.tree.norm, 0.5)}), gradtx.adam(lr)
    ),
    "selective_transform": lambda lr: gradtx.selective_transform(
        gradtx.adam(lr), freeze_mask={"dense": False, "scale": True}
    ),
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


def test_monitor_norms_measures_match_optax_monitor():
    params, grad = _problem(7)
    measures = {
        "norm": optax.tree.norm,
        "max_abs": lambda u: optax.tree.max(jax.tree_util.tree_map(jnp.abs, u)),
    }
    ours = gradtx.chain(gradtx.sgd(0.1, momentum=0.9), gradtx.monitor_norms(measures=measures))
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
    with pytest.raises(TypeError, match="monitor_norms: measures must be a dict"):
        gradtx.monitor_norms(measures=[len])


@pytest.mark.parametrize("mask", [{"dense": {"w": True, "b": False}, "scale": False}, True, False])
def test_freeze_matches_optax_freeze(mask):
    params, grad = _problem(8)
    p1, _ = _run(gradtx.chain(gradtx.freeze(mask), gradtx.adam(0.1)), params, grad, 3)
    p2, _ = _run(optax.chain(optax.freeze(mask), optax.adam(0.1)), params, grad, 3)
    _close(p1, p2)
