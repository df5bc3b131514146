"""gradtx's wrappers behave like optax 0.2.8's where the names match.

1. Values that arrive during training (a schedule's value, a hyperparameter injected through
   the state or set with ``replace``) are never refused, eagerly or jitted; the written values
   are refused where they are written. Edge values (``max_norm → 0``, ``decay → 1``,
   ``learning_rate → 0``) give optax's numbers and a NumPy formula's.
2. Masks that are trees of bools *and* callable (Equinox modules with ``__call__``) are trees.
3. ``masked``/``partition`` states have optax's layout (one ``MaskedNode`` at the mask's
   prefix), survive checkpoints, and optax's own ``tree_map_params`` maps them (and
   ``lookahead``'s).
4. optax's ``monitor``/``snapshot``/``measure_with_ema``; the old norm monitor is
   ``monitor_norms``.
5. The smaller names: ``ConditionFn``, ``ShouldSkipUpdateFunction``, ``NonNegativeParamsState``,
   ``MultiTransformState``, ``selective_transform``, ``inject_stateful_hyperparams``,
   ``InjectStatefulHyperparamsState``, ``WrappedSchedule``, ``StatefulSchedule``.

References are float64 NumPy formulas written from the math, and optax itself.
"""

from __future__ import annotations

import inspect
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.tree_utils import tree_map_params

import gradtx

# ----------------------------------------------------------------------------------------------
# Helpers.


def _layout(tree):
    """The tree structure as text (record class names, fields, keys, leaf positions): equal for
    two libraries' states of the same layout, although their classes differ."""
    return str(jax.tree_util.tree_structure(tree))


def _np(tree):
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


def _close(a, b, rtol=1e-5, atol=1e-6):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol
        )


# ----------------------------------------------------------------------------------------------
# 1. One behaviour, eager and jitted: scheduled values reaching an edge.

P = np.array([1.0, -2.0, 0.5])
STEPS = 6


def _grad(t):
    return np.array([0.3, -1.0, 2.0]) * (t + 1)


def _lin(a, b, k, n=4):
    """The linear schedule's value at count k: a + (b − a)·min(k, n)/n."""
    return a + (b - a) * min(k, n) / n


def _ref_clip_by_global_norm(hps):
    out = []
    for t, h in enumerate(hps):
        g, c = _grad(t), h["max_norm"]
        n = np.linalg.norm(g)
        out.append(g if n < c else g / n * c)
    return out


def _ref_clip(hps):
    return [np.clip(_grad(t), -h["max_delta"], h["max_delta"]) for t, h in enumerate(hps)]


def _ref_trace(hps):
    tr, out = np.zeros(3), []
    for t, h in enumerate(hps):
        tr = _grad(t) + h["decay"] * tr
        out.append(tr)
    return out


def _ref_ema(hps):
    e, out = np.zeros(3), []
    for t, h in enumerate(hps):
        e = h["decay"] * e + (1 - h["decay"]) * _grad(t)
        out.append(e)
    return out


def _adam_hat(hps, b1=0.9, b2=0.999, eps=1e-8):
    m, v, out = np.zeros(3), np.zeros(3), []
    for t, h in enumerate(hps):
        b1, b2 = h.get("b1", b1), h.get("b2", b2)
        g = _grad(t)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        k = t + 1
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append((m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + eps))
    return out


def _ref_sgd_lr(hps):
    return [-h["learning_rate"] * _grad(t) for t, h in enumerate(hps)]


def _ref_sgd_momentum(hps):
    return [-0.1 * x for x in _ref_trace([{"decay": h["momentum"]} for h in hps])]


def _ref_adamw(hps):
    return [-0.1 * (a + h["weight_decay"] * P) for a, h in zip(_adam_hat(hps), hps, strict=True)]


def _ref_add_decayed_weights(hps):
    return [_grad(t) + h["weight_decay"] * P for t, h in enumerate(hps)]


# (name, factory name, scheduled args {name: (start, end)}, other args, NumPy reference)
EDGE_CASES = [
    ("clip_by_global_norm->0", "clip_by_global_norm", {"max_norm": (1.0, 0.0)}, {},
     _ref_clip_by_global_norm),
    ("clip->0", "clip", {"max_delta": (1.0, 0.0)}, {}, _ref_clip),
    ("trace_decay->1", "trace", {"decay": (0.5, 1.0)}, {}, _ref_trace),
    ("ema_decay->1", "ema", {"decay": (0.5, 1.0)}, {"debias": False}, _ref_ema),
    ("adam_b2->1", "scale_by_adam", {"b2": (0.5, 1.0)}, {}, _adam_hat),
    ("adam_b1->1_nonfinite", "scale_by_adam", {"b1": (0.5, 1.0)}, {}, _adam_hat),
    ("sgd_lr->0", "sgd", {"learning_rate": (0.1, 0.0)}, {}, _ref_sgd_lr),
    ("sgd_momentum->1", "sgd", {"momentum": (0.5, 1.0)}, {"learning_rate": 0.1},
     _ref_sgd_momentum),
    ("adamw_wd->0", "adamw", {"weight_decay": (0.1, 0.0)}, {"learning_rate": 0.1}, _ref_adamw),
    ("add_decayed_weights->0", "add_decayed_weights", {"weight_decay": (0.1, 0.0)}, {},
     _ref_add_decayed_weights),
]  # fmt: skip


def _inject(lib, factory, sched, other):
    args = {k: lib.linear_schedule(a, b, 4) for k, (a, b) in sched.items()}
    return lib.inject_hyperparams(getattr(lib, factory))(**args, **other)


def _steps(tx, mode):
    p = {"w": jnp.asarray(P, jnp.float32)}
    state = tx.init(p)
    update = jax.jit(tx.update) if mode == "jit" else tx.update
    out = []
    for t in range(STEPS):
        u, state = update({"w": jnp.asarray(_grad(t), jnp.float32)}, state, p)
        out.append(np.asarray(u["w"], np.float64))
    return np.stack(out)


@pytest.mark.parametrize("case", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_scheduled_edge_values_same_eager_and_jitted_and_equal_optax(case):
    _, factory, sched, other, ref_fn = case
    tx = _inject(gradtx, factory, sched, other)
    with gradtx.eager_jit(False):
        plain = _steps(tx, "eager")  # op by op: the inner transform rebuilt from concrete values
    eager = _steps(tx, "eager")  # the compiled eager path
    jitted = _steps(tx, "jit")
    ref_optax = _steps(_inject(optax, factory, sched, other), "jit")
    hps = [{k: _lin(a, b, t) for k, (a, b) in sched.items()} for t in range(STEPS)]
    ref = np.stack(ref_fn(hps))
    assert not np.isfinite(ref).all() if "nonfinite" in case[0] else np.isfinite(ref).all()
    np.testing.assert_allclose(plain, jitted, rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(jitted, ref_optax, rtol=2e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(jitted, ref, rtol=2e-5, atol=1e-6, equal_nan=True)


def test_reduce_on_plateau_with_tolerances_scheduled_to_zero():
    # rtol → 0 with atol = 0 is refused when written, but not when a schedule reaches it.
    with pytest.raises(ValueError, match="one of rtol and atol must be positive"):
        gradtx.reduce_on_plateau(rtol=0.0, atol=0.0)
    tx = gradtx.inject_hyperparams(gradtx.reduce_on_plateau)(
        factor=0.5, patience=1, rtol=gradtx.linear_schedule(1e-4, 0.0, 2), atol=0.0
    )
    p = {"w": jnp.ones(2)}
    runs = []
    for mode in ("plain", "eager", "jit"):
        state = tx.init(p)
        update = jax.jit(tx.update) if mode == "jit" else tx.update
        scales = []
        with gradtx.eager_jit(mode != "plain"):
            for _ in range(5):
                u, state = update(p, state, p, value=jnp.asarray(1.0))
                scales.append(float(u["w"][0]))
        runs.append(scales)
    # NumPy: the first value improves on +inf; a constant loss never improves again, and with
    # patience 1 every later evaluation halves the scale.
    best, scale, want = np.inf, 1.0, []
    for k in range(5):
        rtol = _lin(1e-4, 0.0, k, 2)
        if np.isinf(best) or 1.0 < best - rtol * abs(best):
            best = 1.0
        else:
            scale *= 0.5
        want.append(scale)
    assert runs[0] == runs[1] == runs[2]
    np.testing.assert_allclose(runs[2], want, rtol=1e-7)


def test_written_values_are_checked_where_written_and_state_edits_never_refused():
    with pytest.raises(ValueError, match=r"clip_by_global_norm: max_norm must be in \(0, inf\]"):
        gradtx.inject_hyperparams(gradtx.clip_by_global_norm)(max_norm=0.0)
    with pytest.raises(ValueError, match=r"b1 must be in \[0, 1\), got 1.5"):
        gradtx.inject_hyperparams(gradtx.adam)(learning_rate=gradtx.constant_schedule(0.1), b1=1.5)
    tx = gradtx.inject_hyperparams(gradtx.clip_by_global_norm)(max_norm=1.0)
    p = {"w": jnp.asarray(P, jnp.float32)}
    g = {"w": jnp.asarray(_grad(0), jnp.float32)}
    for max_norm in (0.0, 0.5):
        outs = []
        for mode in ("plain", "eager", "jit"):
            state = tx.init(p)
            state.hyperparams["max_norm"] = jnp.asarray(max_norm)
            update = jax.jit(tx.update) if mode == "jit" else tx.update
            with gradtx.eager_jit(mode != "plain"):
                outs.append(np.asarray(update(g, state, p)[0]["w"]))
        n = np.linalg.norm(_grad(0))
        want = _grad(0) / n * max_norm  # ‖g‖ = 2.25 > max_norm: clipped
        for o in outs:
            np.testing.assert_allclose(o, want, rtol=1e-6, atol=1e-8)


def test_replace_with_a_schedules_value_behaves_the_same_eagerly_and_jitted():
    opt = gradtx.clip_by_global_norm(1.0)
    sched = gradtx.linear_schedule(1.0, 0.0, 2)
    g = jnp.asarray(_grad(1), jnp.float32)
    swapped = jax.jit(lambda o, v: gradtx.replace(o, max_norm=v))
    for k in range(4):
        value = sched(k)  # a JAX array: a jitted caller would pass a tracer
        eager = gradtx.replace(opt, max_norm=value)
        jitted = swapped(opt, value)
        u1, _ = eager.update(g, eager.init(g))
        u2, _ = jitted.update(g, jitted.init(g))
        n = np.linalg.norm(_grad(1))
        c = _lin(1.0, 0.0, k, 2)
        want = _grad(1) if n < c else _grad(1) / n * c
        np.testing.assert_allclose(np.asarray(u1), want, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(np.asarray(u2), np.asarray(u1), rtol=1e-7)
    # a number written by the user is checked (it is concrete under jit too)
    with pytest.raises(ValueError, match="max_norm must be in"):
        gradtx.replace(opt, max_norm=0.0)


# ----------------------------------------------------------------------------------------------
# 2. Equinox masks: trees of bools that are also callable.


class MLP(eqx.Module):
    """A two-layer perceptron: a pytree of arrays with a ``__call__``."""

    layers: list

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.layers = [eqx.nn.Linear(3, 4, key=k1), eqx.nn.Linear(4, 2, key=k2)]

    def __call__(self, x):
        return self.layers[1](jax.nn.relu(self.layers[0](x)))


def _eqx_problem():
    model = MLP(jax.random.PRNGKey(0))
    params = eqx.filter(model, eqx.is_inexact_array)
    mask = jax.tree_util.tree_map(lambda x: eqx.is_inexact_array(x) and x.ndim == 2, model)
    assert callable(mask)  # the trap: an Equinox mask is callable (it is the model's class)
    grads = [
        jax.tree_util.tree_map(lambda x, t=t: jnp.sin(x * (t + 1.0)) + 0.1 * t, params)
        for t in range(3)
    ]
    return params, mask, grads


def _eqx_run(opt, params, grads):
    state = opt.init(params)
    outs = []
    for g in grads:
        u, state = jax.jit(opt.update)(g, state, params)
        outs.append(u)
    return outs, state


def test_equinox_mask_is_a_tree_in_masked_like_optax():
    params, mask, grads = _eqx_problem()
    ours, s1 = _eqx_run(gradtx.masked(gradtx.scale(3.0), mask), params, grads)
    theirs, s2 = _eqx_run(optax.masked(optax.scale(3.0), mask), params, grads)
    for u1, u2, g in zip(ours, theirs, grads, strict=True):
        # NumPy: 3·g on the weight matrices (the mask's True leaves), g on the biases
        want = jax.tree_util.tree_map(
            lambda x, m: 3.0 * np.asarray(x, np.float64) if m else np.asarray(x, np.float64),
            g,
            eqx.filter(mask, lambda x: isinstance(x, bool), replace=None),
        )
        _close(u1, want, rtol=1e-6)
        _close(u1, u2, rtol=1e-6)
    assert _layout(s1) == _layout(s2)


def test_equinox_mask_in_adamw_partition_freeze_and_selective_transform():
    params, mask, grads = _eqx_problem()
    labels = jax.tree_util.tree_map(lambda m: "a" if m else "b", mask)
    pairs = [
        (
            gradtx.adamw(0.1, weight_decay=0.5, mask=mask),
            optax.adamw(0.1, weight_decay=0.5, mask=mask),
        ),
        (
            gradtx.partition({"a": gradtx.adam(0.1), "b": gradtx.sgd(0.1)}, labels),
            # optax calls any callable labels: pass its labels through a function
            optax.partition({"a": optax.adam(0.1), "b": optax.sgd(0.1)}, lambda _: labels),
        ),
        (
            gradtx.chain(gradtx.freeze(mask), gradtx.sgd(0.1)),
            optax.chain(optax.freeze(mask), optax.sgd(0.1)),
        ),
        (
            gradtx.selective_transform(gradtx.sgd(0.1), freeze_mask=mask),
            optax.selective_transform(optax.sgd(0.1), freeze_mask=mask),
        ),
    ]  # fmt: skip
    for ours, theirs in pairs:
        u1, s1 = _eqx_run(ours, params, grads)
        u2, s2 = _eqx_run(theirs, params, grads)
        _close(u1, u2, rtol=2e-5, atol=1e-6)
    # freeze by NumPy: the weight matrices do not move, the biases take −0.1·g
    u, _ = _eqx_run(gradtx.chain(gradtx.freeze(mask), gradtx.sgd(0.1)), params, grads[:1])
    assert np.all(np.asarray(u[0].layers[0].weight) == 0.0)
    np.testing.assert_allclose(
        np.asarray(u[0].layers[1].bias), -0.1 * np.asarray(grads[0].layers[1].bias), rtol=1e-6
    )


def test_a_function_mask_is_still_called():
    params, mask, grads = _eqx_problem()
    fn = lambda p: jax.tree_util.tree_map(lambda x: x.ndim == 2, p)  # noqa: E731
    u1, _ = _eqx_run(gradtx.masked(gradtx.scale(3.0), fn), params, grads)
    u2, _ = _eqx_run(gradtx.masked(gradtx.scale(3.0), mask), params, grads)
    _close(u1, u2, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# 3. State layouts, checkpoints and optax's tree_map_params.

NESTED = {"a": jnp.arange(2.0), "b": {"x": jnp.arange(3.0) - 1.0, "y": jnp.ones(1)}}
MASKS = {
    "prefix": {"a": True, "b": False},
    "nested": {"a": False, "b": {"x": True, "y": False}},
    "all_true_tree": {"a": True, "b": {"x": True, "y": True}},
    "all_true": True,
    "all_false": False,
    "function": lambda p: {"a": True, "b": False},
}


def _inner(lib, inner):
    return lib.scale_by_adam() if inner == "adam" else lib.trace(0.9)


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("inner", ["adam", "trace"])
def test_masked_state_layout_equals_optax(mask, inner):
    m = MASKS[mask]
    ours, theirs = gradtx.masked(_inner(gradtx, inner), m), optax.masked(_inner(optax, inner), m)
    s1, s2 = ours.init(NESTED), theirs.init(NESTED)
    if inner == "adam":  # gradtx's TraceState also has a count (for a scheduled decay)
        assert _layout(s1) == _layout(s2)
    g = jax.tree_util.tree_map(lambda x: x + 0.5, NESTED)
    u1, s1 = ours.update(g, s1, NESTED)
    u2, s2 = theirs.update(g, s2, NESTED)
    moment = s1.inner_state.mu if inner == "adam" else s1.inner_state.trace
    other = s2.inner_state.mu if inner == "adam" else s2.inner_state.trace
    assert _layout(moment) == _layout(other)
    _close(u1, u2, rtol=1e-5)
    _close(moment, other, rtol=1e-5)
    if mask == "prefix":  # one MaskedNode for the whole masked-out subtree "b"
        assert moment["b"] == gradtx.MaskedNode()
        # NumPy: the trace after one step is g; Adam's first step is sign(g)
        want = np.sign(np.asarray(g["a"])) if inner == "adam" else np.asarray(g["a"])
        np.testing.assert_allclose(np.asarray(u1["a"]), want, rtol=1e-4)
        np.testing.assert_array_equal(np.asarray(u1["b"]["x"]), np.asarray(g["b"]["x"]))
    if mask == "all_false":
        assert moment == gradtx.MaskedNode()
        _close(u1, g, rtol=0, atol=0)


PREFIX_LABELS = {"a": "u", "b": "v"}


def test_partition_selective_transform_and_freeze_layouts_equal_optax():
    labels = {"a": "u", "b": {"x": "v", "y": "u"}}
    pairs = [
        (
            gradtx.partition({"u": gradtx.adam(0.1), "v": gradtx.sgd(0.1)}, labels),
            optax.partition({"u": optax.adam(0.1), "v": optax.sgd(0.1)}, labels),
        ),
        (
            gradtx.partition({"u": gradtx.adam(0.1), "v": gradtx.sgd(0.1)}, PREFIX_LABELS),
            optax.multi_transform({"u": optax.adam(0.1), "v": optax.sgd(0.1)}, PREFIX_LABELS),
        ),
        (
            gradtx.selective_transform(gradtx.adam(0.1), freeze_mask={"a": False, "b": True}),
            optax.selective_transform(optax.adam(0.1), freeze_mask={"a": False, "b": True}),
        ),
        (
            gradtx.selective_transform(gradtx.adam(0.1), freeze_mask=True),
            optax.selective_transform(optax.adam(0.1), freeze_mask=True),
        ),
        (gradtx.freeze({"a": True, "b": False}), optax.freeze({"a": True, "b": False})),
    ]  # fmt: skip
    g = jax.tree_util.tree_map(lambda x: 2.0 * x + 1.0, NESTED)
    for ours, theirs in pairs:
        s1, s2 = ours.init(NESTED), theirs.init(NESTED)
        assert _layout(s1) == _layout(s2)
        u1, s1 = ours.update(g, s1, NESTED)
        u2, s2 = theirs.update(g, s2, NESTED)
        assert _layout(s1) == _layout(s2)
        _close((u1, s1), (u2, s2), rtol=1e-5)
    assert gradtx.MultiTransformState is gradtx.PartitionState
    assert type(pairs[1][0].init(NESTED)).__name__ == "PartitionState"
    # selective_transform by NumPy: frozen leaves get 0, the others Adam's first step −0.1·sign
    u, _ = pairs[2][0].update(g, pairs[2][0].init(NESTED), NESTED)
    np.testing.assert_allclose(np.asarray(u["a"]), -0.1 * np.sign(np.asarray(g["a"])), rtol=1e-4)
    np.testing.assert_array_equal(np.asarray(u["b"]["x"]), 0.0)


def test_masked_checkpoint_round_trip():
    opt = gradtx.chain(gradtx.masked(gradtx.scale_by_adam(), {"a": True, "b": False}),
                       gradtx.scale(-0.1))  # fmt: skip
    state = opt.init(NESTED)
    g = jax.tree_util.tree_map(lambda x: x + 1.0, NESTED)
    for _ in range(2):
        _, state = opt.update(g, state, NESTED)
    saved = gradtx.state_dict(state)
    assert sorted(saved) == ["0/inner_state/count", "0/inner_state/mu/a", "0/inner_state/nu/a"]
    restored = gradtx.load_state_dict(opt.init(NESTED), saved)
    assert _layout(restored) == _layout(state)
    _close(restored, state, rtol=0, atol=0)
    # the next step from the restored state equals the next step from the original
    u1, _ = opt.update(g, restored, NESTED)
    u2, _ = opt.update(g, state, NESTED)
    _close(u1, u2, rtol=0, atol=0)
    # NumPy: Adam's moments after two steps of the same gradient
    ga = np.asarray(g["a"], np.float64)
    np.testing.assert_allclose(
        np.asarray(saved["0/inner_state/mu/a"]), (1 - 0.9**2) * ga, rtol=1e-6
    )


def _mapped(lib_opt, state):
    return tree_map_params(
        lib_opt, lambda x: f"P{np.shape(x)}", state, transform_non_params=lambda _: None
    )


@pytest.mark.parametrize(
    "which", ["masked_tree", "masked_function", "masked_nested", "partition", "lookahead"]
)
def test_optax_tree_map_params_works_on_gradtx_states(which):
    def build(lib):
        if which == "masked_tree":
            return lib.masked(lib.adam(0.1), {"a": True, "b": False})
        if which == "masked_function":
            return lib.masked(
                lib.adam(0.1), lambda p: jax.tree_util.tree_map(lambda x: x.shape[0] > 1, p)
            )
        if which == "masked_nested":
            return lib.chain(lib.masked(lib.sgd(0.1, momentum=0.9), {"a": False, "b": True}))
        if which == "partition":
            return lib.partition({"u": lib.adam(0.1), "v": lib.sgd(0.1)}, {"a": "u", "b": "v"})
        return lib.lookahead(lib.adam(0.1), 2, 0.5)

    def params(lib):
        return lib.LookaheadParams.init_synced(NESTED) if which == "lookahead" else NESTED

    ours, theirs = build(gradtx), build(optax)
    s1, s2 = ours.init(params(gradtx)), theirs.init(params(optax))
    m1, m2 = _mapped(ours, s1), _mapped(theirs, s2)
    if which != "masked_nested":  # gradtx's TraceState has an extra count field
        assert _layout(m1) == _layout(m2)
        assert jax.tree_util.tree_leaves(m1) == jax.tree_util.tree_leaves(m2)
    # every params-shaped leaf was mapped, every other leaf (counts) was replaced by None
    want = {
        "masked_tree": ["P(2,)"] * 2,  # mu["a"], nu["a"]
        "masked_function": ["P(2,)", "P(3,)"] * 2,  # "a" and "b/x"
        "masked_nested": ["P(3,)", "P(1,)"],  # the trace of "b"
        "partition": ["P(2,)"] * 2,  # Adam's moments of "a" (sgd keeps nothing)
        "lookahead": ["P(2,)", "P(3,)", "P(1,)"] * 2,
    }[which]
    assert jax.tree_util.tree_leaves(m1) == want


# ----------------------------------------------------------------------------------------------
# 4. monitor, snapshot, measure_with_ema; monitor_norms.


def _norm(t):
    return np.sqrt(
        sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree_util.tree_leaves(t))
    )


def _monitor_pair(lib):
    return lib.chain(
        lib.sgd(0.1, momentum=0.9),
        lib.monitor(
            {
                "norm_before_clip": optax.tree.norm,
                "is_clipped_ema": lib.measure_with_ema(lambda x: optax.tree.norm(x) > 1.0, 0.9),
            }
        ),
        lib.clip_by_global_norm(1.0),
    )


def test_monitor_matches_optax_numbers_state_and_numpy():
    ours, theirs = _monitor_pair(gradtx), _monitor_pair(optax)
    params = jnp.array([1.0, 2.0, 3.0])
    s1, s2 = ours.init(params), theirs.init(params)
    # On purpose: ours is filled with zeros at init (one structure from the start); optax's
    # measurements appear on the first update.
    assert set(s1[1].measurements) == {"norm_before_clip", "is_clipped_ema"}
    assert s2[1].measurements == {}
    p1 = p2 = params
    trace, ema, norms, emas = np.zeros(3), 0.0, [], []
    for t in range(4):
        g1, g2 = 2 * p1, 2 * p2  # ∇ Σ x²
        u1, s1 = jax.jit(ours.update)(g1, s1)
        u2, s2 = theirs.update(g2, s2)
        # NumPy: momentum, the norm before clipping, the debiased EMA of "clipped" (0/1)
        trace = np.asarray(g1, np.float64) + 0.9 * trace
        n = np.linalg.norm(0.1 * trace)
        ema = 0.9 * ema + 0.1 * float(n > 1.0)
        norms.append(n)
        emas.append(ema / (1 - 0.9 ** (t + 1)))
        np.testing.assert_allclose(float(s1[1].measurements["norm_before_clip"]), n, rtol=1e-5)
        np.testing.assert_allclose(float(s1[1].measurements["is_clipped_ema"]), emas[-1], rtol=1e-5)
        for k in ("norm_before_clip", "is_clipped_ema"):
            np.testing.assert_allclose(
                float(optax.tree.get(s1, k)), float(optax.tree.get(s2, k)), rtol=1e-5
            )
        assert _layout(s1[1]) == _layout(s2[1])
        _close(u1, u2)
        p1, p2 = gradtx.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    assert any(n > 1.0 for n in norms) and any(n <= 1.0 for n in norms)  # both branches seen
    # init already has the measurements, so a checkpoint loads into a fresh state
    restored = gradtx.load_state_dict(ours.init(params), gradtx.state_dict(s1))
    assert _layout(restored) == _layout(s1)
    _close(restored, s1, rtol=0, atol=0)


def test_snapshot_matches_optax_and_records_what_reaches_it():
    params = {"w": jnp.array([1.0, 2.0, 3.0])}
    pair = [
        lib.chain(lib.sgd(0.1, momentum=0.9), lib.snapshot("norm", optax.tree.norm),
                  lib.clip_by_global_norm(0.05))
        for lib in (gradtx, optax)
    ]  # fmt: skip
    s1, s2 = pair[0].init(params), pair[1].init(params)
    assert _layout(s1[1]) == _layout(s2[1])  # snapshot's init records measure(params), as optax's
    np.testing.assert_allclose(float(s1[1].measurement["norm"]), np.sqrt(14.0), rtol=1e-6)
    trace = np.zeros(3)
    for _ in range(2):
        g = jax.tree_util.tree_map(lambda x: 2 * x, params)
        u1, s1 = pair[0].update(g, s1)
        u2, s2 = pair[1].update(g, s2)
        trace = 2 * np.asarray(params["w"], np.float64) + 0.9 * trace
        np.testing.assert_allclose(float(optax.tree.get(s1, "norm")), np.linalg.norm(0.1 * trace),
                                   rtol=1e-5)  # fmt: skip
        np.testing.assert_allclose(
            float(optax.tree.get(s1, "norm")), float(optax.tree.get(s2, "norm")), rtol=1e-6
        )
        _close(u1, u2)
        params = gradtx.apply_updates(params, u1)


@pytest.mark.parametrize("debias", [True, False])
def test_measure_with_ema_equals_numpy_and_optax(debias):
    measure = lambda u: {"n": optax.tree.norm(u), "m": jnp.max(u)}  # noqa: E731
    ours = gradtx.measure_with_ema(measure, 0.8, debias=debias)
    theirs = optax.measure_with_ema(measure, 0.8, debias=debias)
    x = jnp.array([1.0, -2.0])
    s1, s2 = ours.init(x), theirs.init(x)
    assert _layout(s1) == _layout(s2)  # (EmptyState(), EmaState(count, ema))
    e = {"n": 0.0, "m": 0.0}
    for t in range(4):
        u = jnp.array([1.0 + t, -2.0 * t])
        m1, s1 = ours.update(u, s1)
        m2, s2 = theirs.update(u, s2)
        raw = {"n": float(np.linalg.norm(np.asarray(u))), "m": float(np.max(np.asarray(u)))}
        e = {k: 0.8 * e[k] + 0.2 * raw[k] for k in e}
        want = {k: v / (1 - 0.8 ** (t + 1)) if debias else v for k, v in e.items()}
        _close(m1, want, rtol=1e-6)
        _close(m1, m2, rtol=1e-6)
        _close(s1, s2, rtol=1e-6)
    with pytest.raises(ValueError, match=r"measure_with_ema: decay must be in \[0, 1\)"):
        gradtx.measure_with_ema(measure, 1.0)


def test_monitor_passes_extra_args_to_measures_and_checks_its_argument():
    loss = gradtx.GradientTransformationExtraArgs(
        lambda p: gradtx.EmptyState(), lambda u, s, p=None, *, value, **kw: (value, s)
    )
    tx = gradtx.monitor({"loss": loss})
    s = tx.init(jnp.zeros(2))
    assert s.measurements == {}  # needs value=: recorded from the first update on, as optax
    u, s = tx.update(jnp.ones(2), s, value=jnp.asarray(3.5))
    assert float(s.measurements["loss"]) == 3.5
    np.testing.assert_array_equal(np.asarray(u), [1.0, 1.0])
    with pytest.raises(TypeError, match="monitor: measures must be a dict"):
        gradtx.monitor([optax.tree.norm])


def test_monitor_norms_is_the_old_monitor():
    tx = gradtx.monitor_norms(gradtx.sgd(0.1))
    u, s = jax.jit(tx.update)(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
    assert isinstance(s, gradtx.MonitorNormsState)
    np.testing.assert_allclose([float(s.grad_norm), float(s.update_norm)], [5.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(u), [-0.3, -0.4], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# 5. The smaller names.


def _params_of(fn):
    return list(inspect.signature(fn).parameters)


def test_condition_fn_and_should_skip_update_function_are_optax_protocols():
    assert _params_of(gradtx.ConditionFn.__call__) == _params_of(
        optax.transforms.ConditionFn.__call__
    )
    assert _params_of(gradtx.ShouldSkipUpdateFunction.__call__) == _params_of(
        optax.ShouldSkipUpdateFunction.__call__
    )

    def every_other(step, **extra_args):  # a ConditionFn
        return step % 2 == 0

    def skip_big(updates, gradient_step, params):  # a ShouldSkipUpdateFunction
        n = optax.tree.norm(updates)
        return n > 3.0, {"norm": n}

    runs = []
    for lib in (gradtx, optax):
        opt = lib.chain(
            lib.conditionally_transform(lib.scale(10.0), every_other),
            lib.MultiSteps(
                lib.sgd(1.0), 2, should_skip_update_fn=skip_big
            ).gradient_transformation(),
        )
        s, out = opt.init(jnp.zeros(2)), []
        for t in range(6):
            u, s = opt.update(jnp.array([0.1, 0.2]) * (t + 1), s)
            out.append(np.asarray(u))
        runs.append(out)
    _close(runs[0], runs[1], rtol=1e-6)
    # NumPy: even steps are scaled by 10; gradients of norm > 3 (steps 2 and 4) are skipped;
    # every two kept gradients, sgd(1.0) applies their mean
    g = [np.array([0.1, 0.2]) * (t + 1) * (10 if t % 2 == 0 else 1) for t in range(6)]
    z = np.zeros(2)
    want = [z, -(g[0] + g[1]) / 2, z, z, z, -(g[3] + g[5]) / 2]
    _close(runs[0], want, rtol=1e-6)


def test_non_negative_params_state_is_optax_empty_state():
    p = jnp.ones(2)
    s1 = gradtx.keep_params_nonnegative().init(p)
    s2 = optax.keep_params_nonnegative().init(p)
    assert isinstance(s1, gradtx.NonNegativeParamsState)
    assert type(s1).__name__ == type(s2).__name__ == "EmptyState" and _layout(s1) == _layout(s2)


def test_inject_hyperparams_state_and_stateful_hyperparams_match_optax():
    sched = (gradtx.linear_schedule(0.1, 0.01, 3), optax.linear_schedule(0.1, 0.01, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with pytest.raises(DeprecationWarning, match="inject_stateful_hyperparams"):
            gradtx.inject_stateful_hyperparams(gradtx.sgd)
    with pytest.warns(DeprecationWarning):
        ours = gradtx.inject_stateful_hyperparams(gradtx.sgd)(learning_rate=sched[0], momentum=0.9)
    with pytest.warns(DeprecationWarning):
        theirs = optax.inject_stateful_hyperparams(optax.sgd)(learning_rate=sched[1], momentum=0.9)
    p = jnp.array([1.0, -1.0])
    s1, s2 = ours.init(p), theirs.init(p)
    assert isinstance(s1, gradtx.InjectStatefulHyperparamsState)
    # the same layout (gradtx's TraceState inside also has a count, for a scheduled decay)
    assert _layout(s1._replace(inner_state=None)) == _layout(s2._replace(inner_state=None))
    assert isinstance(s1.hyperparams_states["learning_rate"], gradtx.WrappedScheduleState)
    trace = np.zeros(2)
    for t in range(5):
        g = jnp.array([0.5, 2.0]) * (t + 1)
        u1, s1 = jax.jit(ours.update)(g, s1, p)
        u2, s2 = theirs.update(g, s2, p)
        trace = np.asarray(g, np.float64) + 0.9 * trace
        np.testing.assert_allclose(np.asarray(u1), -_lin(0.1, 0.01, t, 3) * trace, rtol=1e-5)
        _close((u1, s1), (u2, s2), rtol=1e-5)
        assert int(s1.hyperparams_states["learning_rate"].count) == t + 1
    # a checkpoint of it loads into a fresh state
    saved = gradtx.state_dict(s1)
    assert int(saved["hyperparams_states/learning_rate/count"]) == 5
    _close(gradtx.load_state_dict(ours.init(p), saved), s1, rtol=0, atol=0)


def test_wrapped_schedule_and_a_stateful_schedule_like_optax():
    w = gradtx.WrappedSchedule(gradtx.cosine_decay_schedule(1.0, 4))
    ow = optax.WrappedSchedule(optax.cosine_decay_schedule(1.0, 4))
    s, os_ = w.init(), ow.init()
    for k in range(6):
        np.testing.assert_allclose(float(w(s)), 0.5 * (1 + np.cos(np.pi * min(k, 4) / 4)),
                                   rtol=1e-6, atol=1e-7)  # fmt: skip
        np.testing.assert_allclose(float(w(s)), float(ow(os_)), rtol=1e-6, atol=1e-7)
        s, os_ = w.update(s), ow.update(os_)
    assert _layout(s) == _layout(os_)

    class HalveOnIncrease:
        """A stateful schedule driven by the loss (value=): halve when the loss went up."""

        def init(self):
            return {"lr": jnp.asarray(1.0), "last": jnp.asarray(jnp.inf)}

        def __call__(self, state, **extra_args):
            return state["lr"]

        def update(self, state, *, value, **extra_args):
            lr = jnp.where(value > state["last"], state["lr"] / 2, state["lr"])
            return {"lr": lr, "last": value}

    sched = HalveOnIncrease()
    assert isinstance(sched, gradtx.StatefulSchedule) and isinstance(
        sched, optax.schedules.StatefulSchedule
    )
    ours = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=sched)
    theirs = optax.inject_hyperparams(optax.sgd)(learning_rate=sched)
    s1, s2 = ours.init(jnp.zeros(1)), theirs.init(jnp.zeros(1))
    assert _layout(s1) == _layout(s2)
    lr, last = 1.0, np.inf
    for loss in [3.0, 4.0, 2.0, 5.0, 6.0]:
        value = jnp.asarray(loss)
        u1, s1 = jax.jit(ours.update)(jnp.ones(1), s1, value=value)
        u2, s2 = theirs.update(jnp.ones(1), s2, value=value)
        np.testing.assert_allclose(float(u1[0]), -lr, rtol=1e-7)  # NumPy: this step's rate
        lr, last = (lr / 2 if loss > last else lr), loss
        _close((u1, s1), (u2, s2), rtol=1e-7)
