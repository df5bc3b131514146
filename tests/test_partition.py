"""partition / multi_transform, masked, freeze and parameter groups: NumPy and optax oracles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL, count_compilations, random_problem

import gradtx


def _run(opt, params, grad, steps, *, jit=True):
    """Step an optimizer (gradtx or optax) on the NumPy gradient oracle; return final params."""
    state = opt.init(params)
    update = jax.jit(opt.update) if jit else opt.update
    for t in range(steps):
        g = jax.tree_util.tree_map(jnp.asarray, grad(jax.tree_util.tree_map(np.asarray, params), t))
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
    return params, state


def _close(a, b, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL):
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol),
        a,
        b,
    )


def _problem():
    p, grad = random_problem(3, dtype=np.float32)
    return jax.tree_util.tree_map(jnp.asarray, p), grad


LABELS = {"dense": {"w": "a", "b": "b"}, "scale": "b"}


def test_partition_matches_optax_partition():
    params, grad = _problem()
    ours = gradtx.partition({"a": gradtx.adam(0.1), "b": gradtx.sgd(0.05, momentum=0.9)}, LABELS)
    ref = optax.partition({"a": optax.adam(0.1), "b": optax.sgd(0.05, momentum=0.9)}, LABELS)
    p1, _ = _run(ours, params, grad, 6)
    p2, _ = _run(ref, params, grad, 6)
    _close(p1, p2)


def test_multi_transform_is_partition_and_labels_may_be_a_function_or_prefix():
    params, grad = _problem()
    fn = lambda p: {"dense": "a", "scale": "b"}  # a prefix of the params' tree
    ours = gradtx.multi_transform({"a": gradtx.adam(0.1), "b": gradtx.sgd(0.05)}, fn)
    ref = optax.multi_transform(
        {"a": optax.adam(0.1), "b": optax.sgd(0.05)},
        {"dense": {"w": "a", "b": "a"}, "scale": "b"},
    )
    assert gradtx.multi_transform is gradtx.partition
    _close(_run(ours, params, grad, 5)[0], _run(ref, params, grad, 5)[0])


def test_partition_accepts_optax_members_and_state_holds_only_own_leaves():
    params, grad = _problem()
    ours = gradtx.partition({"a": optax.adam(0.1), "b": gradtx.sgd(0.05)}, LABELS)
    ref = optax.partition({"a": optax.adam(0.1), "b": optax.sgd(0.05)}, LABELS)
    _close(_run(ours, params, grad, 4)[0], _run(ref, params, grad, 4)[0])
    state = gradtx.partition({"a": gradtx.adam(0.1), "b": gradtx.sgd(0.05)}, LABELS).init(params)
    keys = sorted(gradtx.state_dict(state))
    assert keys == [  # optax's layout: each label's state in a MaskedState
        "inner_states/a/inner_state/0/count",
        "inner_states/a/inner_state/0/mu/dense/w",
        "inner_states/a/inner_state/0/nu/dense/w",
    ]


def test_partition_unknown_label_names_it():
    params, _ = _problem()
    tx = gradtx.partition({"a": gradtx.sgd(0.1)}, {"dense": "a", "scale": "zzz"})
    with pytest.raises(ValueError, match="zzz"):
        tx.init(params)


def test_partition_labels_of_the_wrong_structure_are_called_labels():
    params, _ = _problem()
    wrong = {"dense": {"w": "a", "bias": "a"}, "scale": "a"}  # "bias" is not a key of params
    for labels in (wrong, lambda p: wrong):
        tx = gradtx.partition({"a": gradtx.sgd(0.1)}, labels)
        with pytest.raises(ValueError, match=r"^partition: labels must have the structure of"):
            tx.init(params)
    with pytest.raises(ValueError, match=r"^partition: labels must have the structure of"):
        gradtx.partition({"a": gradtx.sgd(0.1)}, None).init(params)
    # a mask keeps its own wording
    with pytest.raises(ValueError, match=r"^masked: mask must have the structure of"):
        gradtx.masked(gradtx.sgd(0.1), {"dense": True, "other": False}).init(params)


def test_masked_matches_optax_masked_with_tree_and_function_masks():
    params, grad = _problem()
    mask = {"dense": {"w": True, "b": False}, "scale": True}
    for m in (mask, lambda p: mask):
        ours = gradtx.chain(gradtx.masked(gradtx.scale_by_adam(), m), gradtx.scale(-0.1))
        ref = optax.chain(optax.masked(optax.scale_by_adam(), mask), optax.scale(-0.1))
        _close(_run(ours, params, grad, 5)[0], _run(ref, params, grad, 5)[0])


def test_masked_passes_unselected_updates_through_unchanged():
    params, _ = _problem()
    tx = gradtx.masked(gradtx.scale(3.0), {"dense": False, "scale": True})  # prefix mask
    g = jax.tree_util.tree_map(lambda p: jnp.full(jnp.shape(p), 2.0), params)
    u, _ = tx.update(g, tx.init(params), params)
    np.testing.assert_array_equal(np.asarray(u["dense"]["w"]), np.full((3, 4), 2.0))
    np.testing.assert_array_equal(np.asarray(u["scale"]), 6.0)


def test_freeze_keeps_frozen_params_fixed_and_trains_the_rest():
    params, grad = _problem()
    tx = gradtx.chain(gradtx.freeze(gradtx.select("*b")), gradtx.sgd(0.1))
    out, _ = _run(tx, params, grad, 3)
    np.testing.assert_array_equal(np.asarray(out["dense"]["b"]), np.asarray(params["dense"]["b"]))
    # the others: plain NumPy SGD
    p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
    for t in range(3):
        g = grad(p, t)
        p = {"dense": {"w": p["dense"]["w"] - 0.1 * g["dense"]["w"], "b": p["dense"]["b"]},
             "scale": p["scale"] - 0.1 * g["scale"]}  # fmt: skip
    _close(out["dense"]["w"], p["dense"]["w"], rtol=1e-5)
    _close(out["scale"], p["scale"], rtol=1e-5)


def test_new_hyperparameters_do_not_recompile():
    params, grad = _problem()
    g = jax.tree_util.tree_map(jnp.asarray, grad(params, 0))

    @jax.jit
    def step(opt, state, params):
        return opt.update(g, state, params)

    def make(lr):
        return gradtx.param_groups(
            gradtx.adamw,
            [gradtx.group("*b", weight_decay=0.0, learning_rate=lr / 2)],
            default=True,
            learning_rate=lr,
            weight_decay=0.01,
        )

    state = make(0.1).init(params)
    step(make(0.1), state, params)
    with count_compilations() as c:
        step(make(0.2), state, params)
        step(make(0.3), state, params)
    assert c["n"] == 0


# ----------------------------------------------------------------------------------------------
# Parameter groups on a transformer-like tree.


def _transformer(rng):
    def n(*shape):
        return rng.normal(size=shape)

    return {
        "embed": {"embedding": n(11, 4)},
        "layer0": {
            "attn": {
                "qkv": {"kernel": n(4, 12), "bias": n(12)},
                "out": {"kernel": n(4, 4), "bias": n(4)},
            },
            "ln1": {"scale": n(4), "bias": n(4)},
            "mlp": {
                "fc1": {"kernel": n(4, 8), "bias": n(8)},
                "fc2": {"kernel": n(8, 4), "bias": n(4)},
            },
            "ln2": {"scale": n(4), "bias": n(4)},
        },
        "final_norm": {"scale": n(4)},
        "head": {"kernel": n(4, 11)},
    }  # fmt: skip


def _paths(tree):
    return [gradtx.key_path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


EXPECTED_DECAY = {
    "embed/embedding",
    "layer0/attn/qkv/kernel",
    "layer0/attn/out/kernel",
    "layer0/mlp/fc1/kernel",
    "layer0/mlp/fc2/kernel",
    "head/kernel",
}


def _np_adamw(params, grads_fn, steps, settings, b1=0.9, b2=0.999, eps=1e-8):
    """Plain float64 AdamW per leaf; ``settings[path] = (lr, wd)``."""
    flat = {
        k: np.asarray(v, np.float64)
        for k, v in zip(_paths(params), jax.tree_util.tree_leaves(params), strict=True)
    }
    m = {k: np.zeros_like(v) for k, v in flat.items()}
    v = {k: np.zeros_like(x) for k, x in flat.items()}
    for t in range(1, steps + 1):
        g = grads_fn(flat, t - 1)
        for k in flat:
            lr, wd = settings[k]
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mh, vh = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            flat[k] = flat[k] - lr * (mh / (np.sqrt(vh) + eps) + wd * flat[k])
    return flat  # fmt: skip


def test_param_groups_select_intended_leaves_and_apply_group_hyperparameters(x64):
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(jnp.asarray, _transformer(rng))
    lr, wd = 1e-2, 0.1
    opt = gradtx.param_groups(
        gradtx.adamw,
        [
            gradtx.group(
                "*bias", "*norm*", "*ln*", weight_decay=0.0, learning_rate=lr / 2, name="no_decay"
            )
        ],
        default=True,
        learning_rate=lr,
        weight_decay=wd,
    )  # fmt: skip
    labels = dict(
        zip(_paths(params), jax.tree_util.tree_leaves(opt.param_labels(params)), strict=True)
    )
    decay = {k for k, v in labels.items() if v == "default"}
    assert decay == EXPECTED_DECAY
    assert {k for k, v in labels.items() if v == "no_decay"} == set(labels) - EXPECTED_DECAY
    # the same split from ndim alone
    by_ndim = gradtx.select(ndim=2)(params)
    assert {
        k for k, v in zip(_paths(params), jax.tree_util.tree_leaves(by_ndim), strict=True) if v
    } == EXPECTED_DECAY

    targets = {
        k: rng.normal(size=np.shape(x))
        for k, x in zip(_paths(params), jax.tree_util.tree_leaves(params), strict=True)
    }

    def grads_flat(flat, t):
        return {k: (x - targets[k]) * (1 + 0.1 * t) for k, x in flat.items()}

    def grad_tree(p, t):
        flat = dict(zip(_paths(p), jax.tree_util.tree_leaves(p), strict=True))
        g = grads_flat({k: np.asarray(v) for k, v in flat.items()}, t)
        return jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(p), [g[k] for k in _paths(p)]
        )

    out, _ = _run(opt, params, grad_tree, 4)
    settings = {k: ((lr, wd) if k in EXPECTED_DECAY else (lr / 2, 0.0)) for k in labels}
    ref = _np_adamw(params, grads_flat, 4, settings)
    got = dict(zip(_paths(out), jax.tree_util.tree_leaves(out), strict=True))
    for k in ref:
        np.testing.assert_allclose(np.asarray(got[k]), ref[k], rtol=1e-10, atol=1e-12)  # fmt: skip
    # lr_scale=0.5 on the group is the same as halving its learning rate
    scaled = gradtx.param_groups(
        gradtx.adamw,
        [gradtx.group("*bias", "*norm*", "*ln*", weight_decay=0.0, lr_scale=0.5)],
        default=True,
        learning_rate=lr,
        weight_decay=wd,
    )
    out_scaled, _ = _run(scaled, params, grad_tree, 4)
    for k, x in zip(_paths(out_scaled), jax.tree_util.tree_leaves(out_scaled), strict=True):
        np.testing.assert_allclose(np.asarray(x), ref[k], rtol=1e-10, atol=1e-12)
    # and the per-group learning rates really differ: the no-decay group moved half as far
    # on its first step (Adam's first step is ±lr per coordinate)
    one, _ = _run(opt, params, grad_tree, 1)
    step = np.abs(
        np.asarray(one["layer0"]["ln1"]["scale"]) - np.asarray(params["layer0"]["ln1"]["scale"])
    )
    np.testing.assert_allclose(step, lr / 2, rtol=1e-6)


def test_param_groups_where_predicate_and_explicit_optimizers():
    rng = np.random.default_rng(1)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), _transformer(rng))
    opt = gradtx.param_groups(
        None,
        [
            gradtx.group(where=lambda path, x: x.size >= 40, optimizer=gradtx.sgd(1.0)),
            gradtx.group(where=lambda path, x: x.size < 40, optimizer=gradtx.set_to_zero()),
        ],
    )  # fmt: skip
    g = jax.tree_util.tree_map(jnp.ones_like, params)
    u, _ = jax.jit(opt.update)(g, opt.init(params), params)
    for path, x in zip(_paths(u), jax.tree_util.tree_leaves(u), strict=True):
        want = -1.0 if np.size(x) >= 40 else 0.0
        np.testing.assert_array_equal(np.asarray(x), want, err_msg=path)


def test_param_groups_unmatched_and_overlapping_leaves_are_named():
    params = {
        "enc": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
        "ln": {"scale": jnp.ones(2)},
    }
    opt = gradtx.param_groups(gradtx.sgd, [gradtx.group("*bias")], learning_rate=0.1)
    with pytest.raises(ValueError, match=r"matched by no group.*enc/kernel.*ln/scale"):
        opt.init(params)
    opt = gradtx.param_groups(
        gradtx.sgd, [gradtx.group("enc/*"), gradtx.group(ndim=1)], learning_rate=0.1
    )
    with pytest.raises(
        ValueError, match=r"several groups: .*enc/bias \(groups \['group0', 'group1'\]\)"
    ):
        opt.init(params)


def test_group_and_select_argument_errors():
    with pytest.raises(ValueError, match="at least one"):
        gradtx.group(weight_decay=0.0)
    with pytest.raises(TypeError, match="ndim"):
        gradtx.select(ndim="two")
    with pytest.raises(TypeError, match="either optimizer or"):
        gradtx.group("*", optimizer=gradtx.sgd(0.1), learning_rate=0.1)
    with pytest.raises(ValueError, match="unique"):
        gradtx.param_groups(
            gradtx.sgd,
            [gradtx.group("a", name="x"), gradtx.group("b", name="x")],
            learning_rate=1.0,
        )
    with pytest.raises(TypeError, match="partition: transforms must be a dict"):
        gradtx.partition([gradtx.sgd(0.1)], {"w": 0})
