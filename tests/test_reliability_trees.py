"""Every optimizer in the registry on every shape of parameter tree and mix of dtypes (issue 14).

- Shapes: nested dicts, lists, tuples, a NamedTuple, registered dataclasses, ``None`` leaves,
  empty containers and empty trees, 0-d scalars, zero-size arrays, a bare array at the root
  (hypothesis generates them; a fixed tree holds every kind at once), and the parameters of
  Flax NNX, Flax Linen and Equinox models go through ``init``/``update``/``apply_updates``
  with the tree structure, the leaf shapes and dtypes kept and the values finite (the updated
  model parameters plug back into their models). The numbers do not depend on the containers:
  on the fixed tree the updates equal those of the same optimizer on the flat list of leaves.
- Dtypes: a step taken inside ``lax.cond`` traces (both branches agree on every dtype) and keeps
  the state dtypes of ``init``; a tree mixing float16, bfloat16, float32 (and complex64 where
  the method is defined) keeps every leaf's update dtype and every state dtype, and its updates
  agree with the same optimizer run in float32; float32 gradients of float16/bfloat16
  parameters give float32 updates (schedule-free methods: the parameters' dtype).
- Integer and boolean leaves in the parameters given to ``init`` raise a ``TypeError`` naming
  the optimizer, the dtype and the path of the first such leaf.

tests/test_properties.py covers homogeneous dtypes across steps and ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, NamedTuple

import equinox as eqx
import flax.linen as nn
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, struct
from hypothesis import given, settings
from jax import lax
from registry import CASES

import gradtx

IDS = [c.name for c in CASES]


def _op_by_op(test):
    """Run ``test`` op by op, as the code is written: the compiled eager path would compile
    every optimizer for every generated structure (it runs the same functions under jit, which
    tests/test_properties.py compares with this path)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        with gradtx.eager_jit(False), jax.disable_jit():
            return test(*args, **kwargs)

    return run


class Pair(NamedTuple):
    a: Any
    b: Any


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["w", "frozen"], meta_fields=["tag"]
)
@dataclasses.dataclass
class Block:
    w: Any
    frozen: Any
    tag: str = "block"  # static: part of the tree structure, not a leaf


@struct.dataclass
class FlaxBlock:
    kernel: Any
    bias: Any


def _grads(params, t):
    # A deterministic, step-dependent gradient of each leaf's own dtype (None stays None).
    return jax.tree.map(
        lambda p: (p - 0.5 * jnp.cos(p * (t + 1)).astype(p.dtype)).astype(p.dtype), params
    )


def _two_steps(case, params, grads_fn=_grads, apply=gradtx.apply_updates):
    """``init`` then two ``update``/``apply`` steps; returns [(updates, new params)] per step."""
    opt = case.make(case.lr)
    state = opt.init(params)
    out = []
    for t in range(2):
        g = grads_fn(params, t)
        extra = case.extra_args(params, g) if case.extra_args else {}
        u, state = opt.update(g, state, params, **extra)
        params = apply(params, u)
        out.append((u, params))
    return out


def _flat_run(case, params):
    """The same optimizer on the list of the tree's array leaves (no containers, no None)."""
    leaves = jax.tree.leaves(params)
    return _two_steps(case, leaves)


def _check_preserved(case, params, steps, finite=True):
    want = jax.tree.structure(params)
    p_leaves = jax.tree.leaves(params)
    for t, (u, new) in enumerate(steps):
        for name, tree in (("updates", u), ("params", new)):
            assert jax.tree.structure(tree) == want, (case.name, t, name)
            leaves = jax.tree.leaves(tree)
            for p, x in zip(p_leaves, leaves, strict=True):
                assert (x.shape, x.dtype) == (p.shape, p.dtype), (case.name, t, name)
                if finite:
                    assert np.all(np.isfinite(np.asarray(x, np.complex128))), (case.name, t, name)


def _check_same_numbers(case, steps, flat_steps, rtol=1e-5, atol=1e-6):
    for (u, new), (fu, fnew) in zip(steps, flat_steps, strict=True):
        for a, b in zip(jax.tree.leaves((u, new)), fu + fnew, strict=True):
            np.testing.assert_allclose(
                np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=case.name
            )


# ---------------------------------------------------------------------------------------------
# Shapes of trees
# ---------------------------------------------------------------------------------------------

# Few distinct shapes across the whole file: run op by op, each new shape of each operation
# compiles once, and that dominates the file's runtime.
_SHAPES = [(), (2,), (3,), (0,), (2, 2), (3, 2), (3, 0)]


def _array(shape):
    return hnp.arrays(np.float32, shape, elements=st.floats(-2, 2, width=32)).map(jnp.asarray)


_LEAVES = st.one_of(st.sampled_from(_SHAPES).flatmap(_array), st.none())


def _containers(children):
    small = st.lists(children, max_size=3)
    return st.one_of(
        st.dictionaries(st.sampled_from(["a", "b", "w", "bias"]), children, max_size=3),
        small,
        small.map(tuple),
        st.builds(Pair, children, children),
        st.builds(Block, children, children, st.sampled_from(["x", "y"])),
        st.builds(FlaxBlock, children, children),
    )


# A bare array at the root, or containers nested up to a few levels deep. (Not None at the root:
# ``update(g, state, None)`` means "no parameters", as in optax.)
TREES = st.recursive(_LEAVES, _containers, max_leaves=8).filter(lambda t: t is not None)


def _a(shape, shift=0.0):
    n = int(np.prod(shape))
    return jnp.asarray(np.linspace(-1.0, 1.0, n).reshape(shape) + shift, jnp.float32)


# Every kind of tree the issue lists, at once.
FIXED_TREE = {
    "dense": {"w": _a((3, 2)), "b": _a((2,), 0.3)},
    "list": [_a((), 0.7), _a((0,)), None],
    "tuple": (_a((3, 0)), Pair(a=_a((3,), -0.2), b=None)),
    "block": Block(w=_a((2, 2), 0.1), frozen=None, tag="b"),
    "flax": FlaxBlock(kernel=_a((3, 2), 0.4), bias=None),
    "empty": {"dict": {}, "list": [], "tuple": ()},
    "none": None,
}
ROOTS = {
    "bare_array": _a((3,), 0.5),
    "bare_scalar": _a((), 0.5),
    "bare_zero_size": _a((3, 0)),
    "empty_dict": {},
    "empty_list": [],
    "every_kind": FIXED_TREE,  # last: its steps are compared with the flat run below
}


# Half the profile's examples per case: 99 cases already give hundreds of trees in all.
@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=max(1, settings.default.max_examples // 2))
@given(params=TREES)
@_op_by_op
def test_generated_trees_keep_their_structure(case, params):
    _check_preserved(case, params, _two_steps(case, params))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_kind_of_tree_keeps_its_structure(case):
    @_op_by_op
    def eager():
        for params in ROOTS.values():
            steps = _two_steps(case, params)
            _check_preserved(case, params, steps)
        _check_same_numbers(case, steps, _flat_run(case, FIXED_TREE))

    eager()
    # traced, as under jit (shapes only: jit equals eager is tests/test_properties.py's)
    traced = jax.eval_shape(functools.partial(_two_steps, case), FIXED_TREE)
    _check_preserved(case, FIXED_TREE, traced, finite=False)


# ---------------------------------------------------------------------------------------------
# Flax and Equinox models
# ---------------------------------------------------------------------------------------------

_X = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)


class _NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(3, 2, rngs=rngs)
        self.norm = nnx.BatchNorm(2, rngs=rngs)  # batch statistics are not nnx.Param
        self.out = nnx.Linear(2, 2, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.tanh(self.norm(self.dense(x))))


class _LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(2)(x))
        return nn.LayerNorm()(nn.Dense(2, use_bias=False)(x))


def _loss(y):
    return jnp.sum(jnp.sin(y) ** 2)


@functools.cache
def _models():
    """The three models, their parameters as each library hands them to an optimizer, and the
    gradients of a loss with respect to them (one tree, one entry per library)."""
    nnx_model = _NNXNet(nnx.Rngs(0))
    nnx_params = nnx.state(nnx_model, nnx.Param)
    graphdef, _, rest = nnx.split(nnx_model, nnx.Param, ...)
    nnx_grads = nnx.grad(lambda m: _loss(m(_X)))(nnx_model)

    linen = _LinenNet()
    linen_params = linen.init(jax.random.key(0), _X)["params"]
    linen_grads = jax.grad(lambda p: _loss(linen.apply({"params": p}, _X)))(linen_params)

    mlp = eqx.nn.MLP(2, 2, width_size=2, depth=2, key=jax.random.key(0))
    eqx_grads = eqx.filter_grad(lambda m: _loss(jax.vmap(m)(_X[:, :2])))(mlp)

    params = {
        "nnx": nnx_params,
        "linen": linen_params,
        "equinox": eqx.filter(mlp, eqx.is_inexact_array),  # None where mlp holds no array
    }
    grads = {"nnx": nnx_grads, "linen": linen_grads, "equinox": eqx_grads}
    forward = {
        "nnx": lambda p: nnx.merge(graphdef, p, rest)(_X),
        "linen": lambda p: linen.apply({"params": p}, _X),
        "equinox": lambda m: jax.vmap(m)(_X[:, :2]),
    }
    return mlp, params, grads, forward


def test_model_gradients_have_the_parameters_structure():
    _, params, grads, _ = _models()
    for name in params:
        assert jax.tree.structure(grads[name]) == jax.tree.structure(params[name]), name
    assert any(x is None for x in jax.tree.leaves(params["equinox"], is_leaf=lambda x: x is None))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@_op_by_op
def test_model_parameters_keep_their_structure(case):
    # One optimizer over the three libraries' parameters at once; Equinox's updates are
    # applied to the model with eqx.apply_updates, as its documentation does.
    mlp, params, grads, forward = _models()
    opt = case.make(case.lr)
    state = opt.init(params)
    steps, p = [], params
    for t in range(2):
        g = jax.tree.map(lambda x, t=t: (0.5**t) * x, grads)
        extra = case.extra_args(p, g) if case.extra_args else {}
        u, state = opt.update(g, state, p, **extra)
        mlp = eqx.apply_updates(mlp, u["equinox"])
        p = {
            "nnx": gradtx.apply_updates(p["nnx"], u["nnx"]),
            "linen": gradtx.apply_updates(p["linen"], u["linen"]),
            "equinox": eqx.filter(mlp, eqx.is_inexact_array),
        }
        steps.append((u, p))
    _check_preserved(case, params, steps)
    assert jax.tree.structure(mlp) == jax.tree.structure(_models()[0])
    assert mlp.activation is _models()[0].activation  # the non-array fields are untouched
    for name, f in forward.items():  # the new parameters plug back into their models
        y = f(mlp if name == "equinox" else p[name])
        assert y.shape == (5, 2) and bool(jnp.all(jnp.isfinite(y))), (case.name, name)


# ---------------------------------------------------------------------------------------------
# Dtypes: lax.cond and mixed-dtype trees
# ---------------------------------------------------------------------------------------------


def _leaf(dtype, shape, shift):
    x = np.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape) + shift
    if jnp.issubdtype(dtype, jnp.complexfloating):
        x = x + 0.5j * x[::-1]
    return jnp.asarray(x, dtype)


def _dtypes(tree):
    return jax.tree.map(lambda x: x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype, tree)


def _cond_step(case, opt, params, state):
    """One step inside ``lax.cond(pred, step, skip)``, traced only (no compilation)."""

    def step(p, s):
        g = _grads(p, 0)
        extra = case.extra_args(p, g) if case.extra_args else {}
        u, s = opt.update(g, s, p, **extra)
        return gradtx.apply_updates(p, u), s, u

    def skip(p, s):
        return p, s, jax.tree.map(jnp.zeros_like, p)

    return jax.eval_shape(
        lambda pred, p, s: lax.cond(pred, step, skip, p, s), jnp.bool_(True), params, state
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dtypes_agree_across_lax_cond_branches(case):
    # jax requires both branches of lax.cond to return the same dtypes, so a step whose state or
    # update dtype drifts from the skipped branch (state unchanged, zero updates) fails to trace.
    # float16 and bfloat16 trees, and one tree of every dtype (complex where it is defined).
    with jax.enable_x64(True):
        mixed = {
            "h": _leaf(jnp.float16, (3, 2), 0.0),
            "b": _leaf(jnp.bfloat16, (2,), 0.1),
            "f": _leaf(jnp.float32, (2, 2), 0.2),
            "d": _leaf(jnp.float64, (), 0.3),
        }
        if case.complex_ok:
            mixed["c"] = _leaf(jnp.complex64, (2,), 0.4)
        trees = [
            {"w": _leaf(dt, (3, 2), 0.0), "b": _leaf(dt, (2,), 0.3)}
            for dt in (jnp.float16, jnp.bfloat16)
        ]
        for params in [*trees, mixed]:
            opt = case.make(case.lr)
            state = opt.init(params)
            p, s, u = _cond_step(case, opt, params, state)
            where = (case.name, _dtypes(params))
            assert _dtypes(s) == _dtypes(state), where
            assert _dtypes(u) == _dtypes(params), where
            assert _dtypes(p) == _dtypes(params), where
            assert jax.tree.structure(s) == jax.tree.structure(state), where


# Schedule-free methods and MoMo (whose weight decay divides the whole new point) return
# x_{t+1} − x_t, a difference of parameters, in the parameters' dtype (as optax's do); every
# other update has the gradient's dtype.
_PARAMETER_DIFFERENCES = {c.name for c in CASES if c.name.startswith("schedule_free")} | {
    "momo",
    "momo_adam",
    "momo_adapt_lower_bound",
    "momo_adam_adapt_lower_bound",
}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_gradients_of_low_precision_parameters(case):
    # Mixed precision: float32 gradients of float16 and bfloat16 parameters (traced only).
    params = {"h": _leaf(jnp.float16, (3, 2), 0.0), "b": _leaf(jnp.bfloat16, (2,), 0.3)}
    grads = jax.tree.map(lambda p: _grads(p, 0).astype(jnp.float32), params)
    opt = case.make(case.lr)
    state = opt.init(params)

    def step(g, s, p):
        extra = case.extra_args(p, g) if case.extra_args else {}
        u, s = opt.update(g, s, p, **extra)
        return u, s, gradtx.apply_updates(p, u)

    u, s, p = jax.eval_shape(step, grads, state, params)
    want = _dtypes(params) if case.name in _PARAMETER_DIFFERENCES else _dtypes(grads)
    assert _dtypes(u) == want, case.name
    assert _dtypes(s) == _dtypes(state), case.name
    assert _dtypes(p) == _dtypes(params), case.name


@pytest.mark.parametrize("case", CASES, ids=IDS)
@_op_by_op
def test_mixed_dtype_tree_keeps_each_leafs_dtype(case):
    params = {
        "half": _leaf(jnp.float16, (3, 2), 0.0),
        "brain": _leaf(jnp.bfloat16, (2,), 0.3),
        "single": {"w": _leaf(jnp.float32, (2, 2), -0.2), "s": _leaf(jnp.float32, (), 0.4)},
    }
    if case.complex_ok:
        params["complex"] = _leaf(jnp.complex64, (2,), 0.1)
    opt = case.make(case.lr)
    state0 = opt.init(params)
    want_state = _dtypes(state0)
    state, p = state0, params
    for t in range(2):
        g = _grads(p, t)
        extra = case.extra_args(p, g) if case.extra_args else {}
        u, state = opt.update(g, state, p, **extra)
        assert _dtypes(u) == _dtypes(g), (case.name, t)  # update dtype = gradient dtype
        p = gradtx.apply_updates(p, u)
        assert _dtypes(p) == _dtypes(params), (case.name, t)
        assert _dtypes(state) == want_state, (case.name, t)  # the state never drifts
        for x in jax.tree.leaves((u, p, state)):
            x = np.asarray(x.astype(jnp.complex64) if jnp.iscomplexobj(x) else x.astype(float))
            assert np.all(np.isfinite(x)), case.name

    # The same optimizer in float32 (complex64 stays): the low-precision leaves agree to their
    # precision after two steps.
    def to32(x):
        return x if jnp.iscomplexobj(x) else x.astype(jnp.float32)

    p32 = jax.tree.map(to32, params)
    ref = _two_steps(case, p32, grads_fn=lambda q, t: jax.tree.map(to32, _grads(q, t)))
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref[-1][1]), strict=True):
        a64, b64 = np.asarray(to32(a), np.complex128), np.asarray(b, np.complex128)
        tol = 3e-2 if a.dtype.itemsize <= 2 else 1e-3
        np.testing.assert_allclose(a64, b64, rtol=tol, atol=tol, err_msg=case.name)


# ---------------------------------------------------------------------------------------------
# Integer and boolean leaves
# ---------------------------------------------------------------------------------------------

# The optimizer the user called, for the cases that call one gradtx optimizer (its name starts
# the message); chains and wrappers are left to the lead's naming rule.
_OPTIMIZERS = {
    name
    for module in ("classic", "adam_variants", "layerwise_and_sign", "full_batch")
    for name in getattr(gradtx.optimizers, module).__all__
}
_CALLED = {c.name: c.name for c in CASES if c.name in _OPTIMIZERS} | {
    "sgd_momentum": "sgd",
    "sgd_nesterov": "sgd",
    "rmsprop_centered_momentum": "rmsprop",
    "lbfgs_no_linesearch": "lbfgs",
}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_integer_and_boolean_leaves_are_refused_at_init(case):
    opt = case.make(case.lr)
    w = _leaf(jnp.float32, (3,), 0.0)
    refused = [
        ({"w": w, "step": {"n": jnp.arange(2, dtype=jnp.int32)}}, "int32", "['step']['n']"),
        ([w, jnp.asarray([True, False])], "bool", "[1]"),
        # the first such leaf in the tree's order is named
        ({"a_flags": jnp.asarray(True), "w": w, "z": jnp.int8(3)}, "bool", "['a_flags']"),
    ]
    for params, dtype, path in refused:
        with pytest.raises(TypeError) as info:
            opt.init(params)
        message = str(info.value)
        assert f"got {dtype} at {path}" in message, (case.name, message)
        assert re.search(r"floating or complex", message), (case.name, message)
        if case.name in _CALLED:
            assert message.startswith(f"{_CALLED[case.name]}: "), (case.name, message)
