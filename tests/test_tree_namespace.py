"""``gradtx.tree`` and ``gradtx.tree_utils`` against ``optax.tree``/``optax.tree_utils`` 0.2.8.

Every name optax has exists here with the same parameters; each function is checked on a nested
tree with ``None`` leaves and float16/bfloat16/float32/complex64 leaves against a float64 NumPy
formula and against optax (values and result dtypes); ``get``/``set``/``map_params`` are checked
on real gradtx optimizer states.
"""

from __future__ import annotations

import inspect
import warnings

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx import tree as gtree
from gradtx import tree_utils as gutils

BF16 = jnp.bfloat16
RTOL = {
    np.dtype(ml_dtypes.bfloat16): 1e-2,
    np.dtype(np.float16): 2e-3,
    np.dtype(np.float32): 2e-5,
    np.dtype(np.complex64): 2e-5,
    np.dtype(np.float64): 1e-12,
    np.dtype(np.int32): 0.0,
}
keystr = jax.tree_util.keystr
builtins_max = max
LOW = 1e-2  # bfloat16's precision: optax's rounding of bfloat16 intermediates


def _public(module):
    return sorted(
        n for n in dir(module) if not n.startswith("_") and not inspect.ismodule(getattr(module, n))
    )


OPTAX_TREE = _public(optax.tree)
OPTAX_UTILS = _public(optax.tree_utils)


# ----------------------------------------------------------------------------------------------
# Helpers: the test tree, a NumPy map, and a three-way comparison.


def _leaf(rng, shape, dtype):
    x = rng.normal(size=shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.normal(size=shape)
    return jnp.asarray(x, dtype=dtype)


def make_tree(seed=0, complex_leaf=True):
    """Nested dict/list with None leaves and float16/bfloat16/float32/complex64 leaves."""
    rng = np.random.default_rng(seed)
    t = {
        "dense": {"w": _leaf(rng, (3, 4), jnp.float32), "b": _leaf(rng, (4,), BF16), "off": None},
        "emb": _leaf(rng, (2, 3), jnp.float16),
        "seq": [_leaf(rng, (2,), jnp.float32), None],
        "scale": _leaf(rng, (), jnp.float32),
    }
    if complex_leaf:
        t["phase"] = _leaf(rng, (3,), jnp.complex64)
    return t


def to_np(x):
    """A leaf as float64 (complex128 for complex) NumPy."""
    x = np.asarray(x)
    return x.astype(np.complex128 if x.dtype.kind == "c" else np.float64)


def np_map(fn, *trees):
    """``fn`` on float64 NumPy copies of the leaves; a ``None`` in the first tree stays None."""
    return jax.tree_util.tree_map(
        lambda *xs: None if xs[0] is None else fn(*[None if x is None else to_np(x) for x in xs]),
        *trees,
        is_leaf=lambda x: x is None,
    )


def _tol(dtype):
    return RTOL[np.dtype(dtype)]


def check(got, oracle, reference, oracle_tol=None):
    """Same structure (None leaves included) and leaf dtypes as optax's result; values close
    to the float64 NumPy reference at the result dtype's precision, and to optax's.

    ``oracle_tol``: where optax rounds an intermediate to a low-precision input's dtype before
    promoting it (a bfloat16 leaf's partial sum in a float32 total), while gradtx widens first,
    the two agree only to that input's precision."""
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(oracle)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(reference)
    for g, o, r in zip(
        jax.tree_util.tree_leaves(got),
        jax.tree_util.tree_leaves(oracle),
        jax.tree_util.tree_leaves(reference),
        strict=True,
    ):
        assert jnp.result_type(g) == jnp.result_type(o), (jnp.result_type(g), jnp.result_type(o))
        assert np.shape(g) == np.shape(o) == np.shape(r)
        tol = _tol(jnp.result_type(g))
        otol = tol if oracle_tol is None else builtins_max(tol, oracle_tol)
        np.testing.assert_allclose(to_np(g), to_np(o), rtol=otol, atol=otol)
        np.testing.assert_allclose(to_np(g), r, rtol=tol, atol=tol)


def leaf_dtypes(tree):
    return [str(jnp.result_type(x)) for x in jax.tree_util.tree_leaves(tree)]


# ----------------------------------------------------------------------------------------------
# Names and signatures.


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", OPTAX_TREE)
def test_every_optax_tree_name_exists_with_its_signature(name):
    assert name in gtree.__all__
    theirs, ours = getattr(optax.tree, name), getattr(gtree, name)
    assert _params(ours) == _params(theirs)


@pytest.mark.parametrize("name", OPTAX_UTILS)
def test_every_optax_tree_utils_name_is_the_tree_function(name):
    assert name in gutils.__all__
    ours = getattr(gutils, name)
    assert ours is getattr(gtree, name.removeprefix("tree_"))  # the same object, not a copy
    theirs = getattr(optax.tree_utils, name)
    if inspect.isclass(theirs):
        assert [f.name for f in theirs.__dataclass_fields__.values()] == list(
            ours.__dataclass_fields__
        )
    else:
        assert _params(ours) == _params(theirs)


def test_namespaces_have_nothing_optax_lacks():
    assert sorted(gtree.__all__) == sorted(OPTAX_TREE + ["NamedTupleKey"])
    assert sorted(gutils.__all__) == OPTAX_UTILS


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("tree_l1_norm", {"ord": 1}),
        ("tree_l2_norm", {"ord": 2}),
        ("tree_linf_norm", {"ord": "inf"}),
    ],
)
def test_deprecated_norm_spellings_warn_and_compute_the_norm(name, kwargs):
    tree = make_tree(1)
    with pytest.warns(DeprecationWarning, match="tree_norm"):
        fn = getattr(gutils, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        oracle = getattr(optax.tree_utils, name)(tree)
    flat = np.abs(np.concatenate([to_np(x).ravel() for x in jax.tree_util.tree_leaves(tree)]))
    want = {1: np.sum(flat), 2: np.sqrt(np.sum(flat**2)), "inf": np.max(flat)}[kwargs["ord"]]
    check(fn(tree), oracle, want, oracle_tol=LOW)


def test_deprecated_scalar_mul_spellings():
    x, y = make_tree(1), make_tree(2)
    with pytest.warns(DeprecationWarning, match="tree_scale"):
        scalar_mul = gutils.tree_scalar_mul
    with pytest.warns(DeprecationWarning, match="tree_add_scale"):
        add_scalar_mul = gutils.tree_add_scalar_mul
    assert scalar_mul is gtree.scale and add_scalar_mul is gtree.add_scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        oracle = optax.tree_utils.tree_add_scalar_mul(x, 3.0, y)
    check(add_scalar_mul(x, 3.0, y), oracle, np_map(lambda a, b: a + 3.0 * b, x, y))
    with pytest.raises(AttributeError, match="tree_nonexistent"):
        gutils.tree_nonexistent  # noqa: B018


# ----------------------------------------------------------------------------------------------
# Arithmetic.


@pytest.mark.parametrize(
    ("name", "np_fn"),
    [
        ("add", lambda a, b: a + b),
        ("sub", lambda a, b: a - b),
        ("mul", lambda a, b: a * b),
        ("div", lambda a, b: a / b),
    ],
)
def test_binary_leafwise_ops(name, np_fn):
    x, y = make_tree(1), make_tree(2)
    got = getattr(gtree, name)(x, y)
    check(got, getattr(optax.tree, name)(x, y), np_map(np_fn, x, y))
    # each leaf keeps its dtype (two leaves of one dtype), None stays None
    assert leaf_dtypes(got) == leaf_dtypes(x)
    assert got["dense"]["off"] is None and got["seq"][1] is None


def test_add_of_more_than_two_trees():
    x, y, z = make_tree(1), make_tree(2), make_tree(3)
    check(gtree.add(x, y, z), optax.tree.add(x, y, z), np_map(lambda a, b, c: a + b + c, x, y, z))


@pytest.mark.parametrize(
    "scalar",
    [0.5, 2, np.float32(-1.5), jnp.asarray(0.25, jnp.float32), jnp.asarray(3.0, BF16)],
    ids=["py-float", "py-int", "np-f32", "jnp-f32", "jnp-bf16"],
)
def test_scale_and_add_scale_follow_jax_promotion(scalar):
    x, y = make_tree(1), make_tree(2)
    s = float(np.asarray(scalar, np.float64))
    check(gtree.scale(scalar, x), optax.tree.scale(scalar, x), np_map(lambda a: s * a, x))
    check(
        gtree.add_scale(x, scalar, y),
        optax.tree.add_scale(x, scalar, y),
        np_map(lambda a, b: a + s * b, x, y),
    )
    got = gtree.scale(scalar, x)
    if isinstance(scalar, float | int):  # a weak Python scalar keeps every leaf's dtype
        assert leaf_dtypes(got) == leaf_dtypes(x)
    if isinstance(scalar, jax.Array) and scalar.dtype == jnp.float32:  # a typed one promotes
        assert got["dense"]["b"].dtype == jnp.float32 and got["emb"].dtype == jnp.float32


def test_add_scale_keeps_none_of_the_first_tree_whatever_the_second_holds():
    x = {"a": jnp.array([1.0, 2.0]), "b": None}
    y = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([5.0])}
    got = gtree.add_scale(x, 2.0, y)
    assert got["b"] is None and optax.tree.add_scale(x, 2.0, y)["b"] is None
    np.testing.assert_allclose(got["a"], [7.0, 10.0])


def test_vdot_conjugates_the_first_tree_and_promotes():
    x, y = make_tree(1), make_tree(2)
    flat = lambda t: [to_np(v).ravel() for v in jax.tree_util.tree_leaves(t)]  # noqa: E731
    want = sum(np.sum(np.conj(a) * b) for a, b in zip(flat(x), flat(y), strict=True))
    got = gtree.vdot(x, y)
    check(got, optax.tree.vdot(x, y), want, oracle_tol=LOW)
    assert got.dtype == jnp.complex64
    # a bfloat16-only pair stays bfloat16, like optax
    bx, by = {"a": x["dense"]["b"]}, {"a": y["dense"]["b"]}
    check(gtree.vdot(bx, by), optax.tree.vdot(bx, by), np.sum(to_np(bx["a"]) * to_np(by["a"])))
    # integers stay integers
    ix, iy = {"a": jnp.array([1, 2])}, {"a": jnp.array([-1, 3])}
    assert gtree.vdot(ix, iy).dtype == optax.tree.vdot(ix, iy).dtype == jnp.int32
    assert int(gtree.vdot(ix, iy)) == 5
    assert int(gtree.vdot({}, {})) == 0 == optax.tree.vdot({}, {})


@pytest.mark.parametrize("associative_reduction", [False, True])
def test_sum(associative_reduction):
    x = make_tree(1)
    want = sum(np.sum(to_np(v)) for v in jax.tree_util.tree_leaves(x))
    got = gtree.sum(x, associative_reduction)
    check(got, optax.tree.sum(x, associative_reduction), want, oracle_tol=LOW)
    real = make_tree(1, complex_leaf=False)
    want = sum(np.sum(to_np(v)) for v in jax.tree_util.tree_leaves(real))
    check(gtree.sum(real, associative_reduction), optax.tree.sum(real), want, oracle_tol=LOW)
    assert int(gtree.sum({})) == 0 == optax.tree.sum({})


def test_pairwise_sum_of_many_leaves_equals_the_sum():
    leaves = {f"p{i}": jnp.full((2,), float(i)) for i in range(7)}  # odd count: one left over
    assert float(gtree.sum(leaves, associative_reduction=True)) == 2 * sum(range(7))


def test_max_min_ignore_empty_leaves():
    x = make_tree(1, complex_leaf=False)
    x["empty"] = jnp.zeros((0,), jnp.float32)
    flat = np.concatenate([to_np(v).ravel() for v in jax.tree_util.tree_leaves(x)])
    check(gtree.max(x), optax.tree.max(x), np.max(flat))
    check(gtree.min(x), optax.tree.min(x), np.min(flat))
    assert gtree.max({}) == -np.inf == optax.tree.max({})
    assert gtree.min({"e": jnp.zeros((0,))}) == np.inf == optax.tree.min({"e": jnp.zeros((0,))})


def test_size_counts_elements():
    x = make_tree(1)
    want = sum(np.size(v) for v in jax.tree_util.tree_leaves(x))
    assert gtree.size(x) == optax.tree.size(x) == want == 12 + 4 + 6 + 2 + 1 + 3
    assert isinstance(gtree.size(x), int)


def test_conj_and_real():
    x = make_tree(1)
    check(gtree.conj(x), optax.tree.conj(x), np_map(np.conj, x))
    check(gtree.real(x), optax.tree.real(x), np_map(np.real, x))
    assert gtree.real(x)["phase"].dtype == jnp.float32
    assert gtree.conj(x)["phase"].dtype == jnp.complex64


@pytest.mark.parametrize("ord_", [None, 2, 1, np.inf, "inf", "infinity"])
@pytest.mark.parametrize("squared", [False, True])
def test_norm(ord_, squared):
    for tree in (make_tree(1), make_tree(2, complex_leaf=False)):
        flat = np.concatenate([np.abs(to_np(v)).ravel() for v in jax.tree_util.tree_leaves(tree)])
        if ord_ in (None, 2):
            want = np.sum(flat**2) if squared else np.sqrt(np.sum(flat**2))
        elif ord_ == 1:
            want = np.sum(flat) ** (2 if squared else 1)
        else:
            want = np.max(flat) ** (2 if squared else 1)
        got = gtree.norm(tree, ord_, squared)
        check(got, optax.tree.norm(tree, ord_, squared), want, oracle_tol=LOW)
        assert got.dtype == jnp.float32  # complex leaves count their modulus


def test_norm_of_low_precision_trees_keeps_their_dtype():
    tree = {"a": jnp.asarray([3.0, 4.0], BF16), "b": None}
    for ord_ in (2, 1, "inf"):
        got = gtree.norm(tree, ord_)
        assert got.dtype == optax.tree.norm(tree, ord_).dtype == BF16
    np.testing.assert_allclose(float(gtree.norm(tree)), 5.0)
    half = {"a": jnp.asarray([1.0, -2.0], jnp.float16)}
    check(gtree.norm(half, 1), optax.tree.norm(half, 1), 3.0)


def test_norm_rejects_unsupported_orders_and_empty_trees_have_norm_zero():
    with pytest.raises(ValueError, match="norm: ord must be .* got 3"):
        gtree.norm(make_tree(1), ord=3)
    with pytest.raises(ValueError):
        optax.tree.norm(make_tree(1), ord=3)
    for ord_ in (2, 1, "inf"):
        assert float(gtree.norm({}, ord_)) == 0.0  # optax gives -inf for ord=inf here


def test_batch_shape():
    x = make_tree(1)
    got = gtree.batch_shape(x, (2, 3))
    want = np_map(lambda a: np.broadcast_to(a, (2, 3, *a.shape)), x)
    check(got, optax.tree.batch_shape(x, (2, 3)), want)
    check(gtree.batch_shape(x), optax.tree.batch_shape(x), np_map(lambda a: a, x))


@pytest.mark.parametrize("dtype", [None, jnp.float16, BF16, jnp.float32, jnp.complex64])
def test_zeros_ones_full_like(dtype):
    x = make_tree(1)
    for name, fill in (("zeros_like", 0.0), ("ones_like", 1.0)):
        got = getattr(gtree, name)(x, dtype)
        check(
            got,
            getattr(optax.tree, name)(x, dtype),
            np_map(lambda a, v=fill: np.full_like(a, v), x),
        )
        if dtype is not None:
            assert set(leaf_dtypes(got)) == {str(jnp.dtype(dtype))}
        else:
            assert leaf_dtypes(got) == leaf_dtypes(x)
    got = gtree.full_like(x, 2.5, dtype)
    check(got, optax.tree.full_like(x, 2.5, dtype), np_map(lambda a: np.full_like(a, 2.5), x))


@pytest.mark.parametrize(("lo", "hi"), [(-0.5, 0.3), (None, 0.3), (-0.5, None)])
def test_clip(lo, hi):
    x = make_tree(1, complex_leaf=False)
    want = np_map(
        lambda a: np.clip(a, -np.inf if lo is None else lo, np.inf if hi is None else hi), x
    )
    got = gtree.clip(x, lo, hi)
    check(got, optax.tree.clip(x, lo, hi), want)
    assert leaf_dtypes(got) == leaf_dtypes(x)


def test_where():
    x, y = make_tree(1), make_tree(2)
    for cond in (True, False, jnp.asarray(True)):
        want = np_map(lambda a, b, c=bool(cond): a if c else b, x, y)
        check(gtree.where(cond, x, y), optax.tree.where(cond, x, y), want)
    a, b = {"v": jnp.arange(3.0)}, {"v": -jnp.arange(3.0)}
    mask = jnp.array([True, False, True])
    check(gtree.where(mask, a, b), optax.tree.where(mask, a, b), {"v": np.array([0.0, -1.0, 2.0])})


def test_allclose():
    x = make_tree(1)
    y = jax.tree_util.tree_map(lambda a: a * (1 + 1e-7), x)
    assert bool(gtree.allclose(x, x)) and bool(optax.tree.allclose(x, x))
    assert bool(gtree.allclose(x, y)) == bool(optax.tree.allclose(x, y)) is True
    far = make_tree(2)
    assert not bool(gtree.allclose(x, far)) and not bool(optax.tree.allclose(x, far))
    a, b = {"v": jnp.array([1.0, 2.0])}, {"v": jnp.array([1.05, 2.0])}
    for rtol, atol in ((0.1, 0.0), (0.0, 0.1), (1e-5, 1e-8)):
        want = bool(np.all(np.abs(to_np(a["v"]) - to_np(b["v"])) <= atol + rtol * to_np(b["v"])))
        assert bool(gtree.allclose(a, b, rtol, atol)) == want
        assert bool(optax.tree.allclose(a, b, rtol, atol)) == want
    n = {"v": jnp.array([np.nan])}
    assert not bool(gtree.allclose(n, n)) and bool(gtree.allclose(n, n, equal_nan=True))
    assert bool(optax.tree.allclose(n, n, equal_nan=True))
    assert gtree.allclose({}, {}) is True


# ----------------------------------------------------------------------------------------------
# Moments.


def _moment_inputs():
    g, m = make_tree(3), make_tree(4)
    m["dense"]["off"] = jnp.zeros(2)  # a moment where the update is None: the output is None
    return g, m


@pytest.mark.parametrize("decay", [0.9, jnp.asarray(0.8, jnp.float32)], ids=["py", "f32"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_update_moment(decay, order):
    g, m = _moment_inputs()
    d = float(decay)
    got = gtree.update_moment(g, m, decay, order)
    want = np_map(lambda a, b: (1 - d) * a**order + d * b, g, m)
    check(got, optax.tree.update_moment(g, m, decay, order), want, oracle_tol=LOW)
    assert got["dense"]["off"] is None


@pytest.mark.parametrize("decay", [0.9, jnp.asarray(0.8, jnp.float32)], ids=["py", "f32"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_update_moment_per_elem_norm(decay, order):
    g, m = _moment_inputs()
    m = jax.tree_util.tree_map(jnp.real, m)  # the moments of |g|^k are real
    d = float(decay)
    got = gtree.update_moment_per_elem_norm(g, m, decay, order)
    want = np_map(lambda a, b: (1 - d) * np.abs(a) ** order + d * b, g, m)
    oracle = optax.tree.update_moment_per_elem_norm(g, m, decay, order)
    if order % 2:
        # optax raises real leaves to g**k, keeping the sign for odd k; the per-element norm
        # is |g|, so gradtx uses |g|**k: compare with optax on |g| instead.
        oracle = optax.tree.update_moment_per_elem_norm(
            jax.tree_util.tree_map(jnp.abs, g), m, decay, order
        )
    check(got, oracle, want, oracle_tol=LOW)
    assert got["phase"].dtype == jnp.float32 and got["dense"]["off"] is None


def test_update_infinity_moment():
    g, u = _moment_inputs()
    g.pop("phase"), u.pop("phase")
    got = gtree.update_infinity_moment(g, u, 0.7, 1e-3)
    want = np_map(lambda a, b: np.maximum(np.abs(a) + 1e-3, 0.7 * b), g, u)
    check(got, optax.tree.update_infinity_moment(g, u, 0.7, 1e-3), want, oracle_tol=LOW)
    assert got["dense"]["off"] is None
    # both branches of the max are taken
    w, uw = to_np(g["dense"]["w"]), to_np(u["dense"]["w"])
    assert np.any(np.abs(w) + 1e-3 > 0.7 * uw) and np.any(np.abs(w) + 1e-3 < 0.7 * uw)


@pytest.mark.parametrize("decay", [0.9, jnp.asarray(0.99, jnp.float32)], ids=["py", "f32"])
@pytest.mark.parametrize("count", [1, 7])
def test_bias_correction_keeps_each_leaf_dtype(decay, count):
    m = make_tree(5)
    d = float(decay)
    got = gtree.bias_correction(m, decay, jnp.asarray(count, jnp.int32))
    want = np_map(lambda a: a / (1 - d**count), m)
    check(got, optax.tree.bias_correction(m, decay, jnp.asarray(count, jnp.int32)), want)
    assert leaf_dtypes(got) == leaf_dtypes(m)
    jitted = jax.jit(gtree.bias_correction)(m, decay, jnp.asarray(count, jnp.int32))
    check(jitted, got, want)


# ----------------------------------------------------------------------------------------------
# Dtypes.


@pytest.mark.parametrize("dtype", [None, jnp.float16, BF16, jnp.float32, jnp.complex64])
def test_cast(dtype):
    x = make_tree(1, complex_leaf=False)
    got = gtree.cast(x, dtype)
    if dtype is None:
        assert got is x
        return
    want = np_map(lambda a: to_np(np.asarray(a).astype(jnp.dtype(dtype))), x)
    check(got, optax.tree.cast(x, dtype), want)
    assert set(leaf_dtypes(got)) == {str(jnp.dtype(dtype))}


def test_cast_like():
    x = make_tree(1, complex_leaf=False)
    like = {
        "dense": {"w": jnp.zeros((3, 4), BF16), "b": jnp.zeros(4, jnp.float32), "off": None},
        "emb": jnp.zeros((2, 3), jnp.float32),
        "seq": [2.0, None],  # a Python number has no dtype: that leaf keeps its own
        "scale": jnp.zeros((), jnp.float16),
    }
    got = gtree.cast_like(x, like)
    check(got, optax.tree.cast_like(x, like), np_map(lambda a, o: a, x, like))
    # leaves in key order: dense.b, dense.w, emb, scale, seq[0]
    assert leaf_dtypes(got) == ["float32", "bfloat16", "float32", "float16", "float32"]
    np.testing.assert_allclose(to_np(got["dense"]["b"]), to_np(x["dense"]["b"]))


def test_dtype_of_a_tree():
    same = {"a": jnp.zeros(2, BF16), "b": [jnp.zeros(1, BF16)], "c": None}
    assert gtree.dtype(same) == optax.tree.dtype(same) == jnp.dtype(BF16)
    mixed = {"a": jnp.zeros(1, jnp.float16), "b": jnp.zeros(1, jnp.float32)}
    for handler, want in (("promote", "float32"), ("highest", "float32"), ("lowest", "float16")):
        assert gtree.dtype(mixed, handler) == optax.tree.dtype(mixed, handler) == jnp.dtype(want)
    with pytest.raises(ValueError, match=r"dtype: the leaves have different dtypes.*\['b'\]"):
        gtree.dtype(mixed)
    with pytest.raises(ValueError):
        optax.tree.dtype(mixed)
    halves = {"a": jnp.zeros(1, jnp.float16), "b": jnp.zeros(1, BF16)}  # neither promotes
    assert gtree.dtype(halves, "promote") == optax.tree.dtype(halves, "promote") == jnp.float32
    for handler in ("highest", "lowest"):
        with pytest.raises(ValueError, match="cannot be ordered"):
            gtree.dtype(halves, handler)
        with pytest.raises(ValueError):
            optax.tree.dtype(halves, handler)
    with pytest.raises(ValueError, match="mixed_dtype_handler must be"):
        gtree.dtype(mixed, "widest")
    with pytest.raises(ValueError):
        optax.tree.dtype(mixed, "widest")
    assert gtree.dtype({}) == optax.tree.dtype({}) == jnp.asarray([]).dtype


# ----------------------------------------------------------------------------------------------
# Random trees.


def test_split_key_like_gives_the_split_keys_in_leaf_order():
    x = make_tree(1)
    key = jax.random.key(3)
    got = gtree.split_key_like(key, x)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(x)
    want = np.asarray(jax.random.key_data(jax.random.split(key, 6)))
    data = [np.asarray(jax.random.key_data(k)) for k in jax.tree_util.tree_leaves(got)]
    np.testing.assert_array_equal(np.stack(data), want)
    oracle = optax.tree.split_key_like(key, x)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(oracle), strict=True):
        np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
    raw = gtree.split_key_like(jax.random.PRNGKey(3), {"a": 1.0, "b": 2.0})  # raw uint32 keys
    np.testing.assert_array_equal(
        np.stack([raw["a"], raw["b"]]), jax.random.split(jax.random.PRNGKey(3), 2)
    )


def test_random_like_matches_optax_and_is_standard_normal():
    target = {"big": jnp.zeros((4000,), jnp.float32), "h": jnp.zeros((3, 2), BF16), "n": None}
    key = jax.random.key(0)
    got = gtree.random_like(key, target)
    oracle = optax.tree.random_like(key, target)
    assert leaf_dtypes(got) == leaf_dtypes(oracle) == leaf_dtypes(target) and got["n"] is None
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(oracle), strict=True):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    big = to_np(got["big"])
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1.0) < 0.05  # N(0, 1): 4000 samples
    assert not np.allclose(to_np(got["h"]).ravel(), big[:6])  # independent keys per leaf


def test_random_like_with_a_sampler_and_dtype():
    target = {"a": jnp.zeros((2000,), BF16), "b": jnp.zeros((3,), jnp.float32)}
    key = jax.random.key(1)

    def uniform(k, shape, dtype):  # no out_sharding parameter
        return jax.random.uniform(k, shape, dtype)

    got = gtree.random_like(key, target, uniform, jnp.float16)
    oracle = optax.tree.random_like(key, target, uniform, jnp.float16)
    assert leaf_dtypes(got) == ["float16", "float16"]
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(oracle), strict=True):
        np.testing.assert_array_equal(to_np(a), to_np(b))
    a = to_np(got["a"])
    assert a.min() >= 0.0 and a.max() < 1.0 and abs(a.mean() - 0.5) < 0.03


def test_unwrap_random_key_data():
    typed, raw = jax.random.key(7), jax.random.PRNGKey(7)
    tree = {"typed": typed, "raw": raw, "x": jnp.ones(2), "n": None}
    got = gtree.unwrap_random_key_data(tree)
    oracle = optax.tree.unwrap_random_key_data(tree)
    assert got["typed"].dtype == jnp.uint32 and got["n"] is None
    np.testing.assert_array_equal(got["typed"], np.asarray(jax.random.key_data(typed)))
    np.testing.assert_array_equal(got["typed"], oracle["typed"])
    assert got["raw"] is raw and got["x"] is tree["x"]


# ----------------------------------------------------------------------------------------------
# get / set / get_all_with_path on gradtx optimizer states.

PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3, -0.1])}
GRADS = [
    {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array([1.0, 0.25])},
    {"w": jnp.array([-0.3, 0.4, 1.0]), "b": jnp.array([-2.0, 0.5])},
]


def _run(opt, params=PARAMS):
    state = opt.init(params)
    for g in GRADS:
        _, state = opt.update(g, state, params)
    return state


def _np_adam_moments(b1=0.9, b2=0.999):
    mu = {k: np.zeros(np.shape(v)) for k, v in PARAMS.items()}
    nu = {k: np.zeros(np.shape(v)) for k, v in PARAMS.items()}
    for g in GRADS:
        for k in mu:
            mu[k] = b1 * mu[k] + (1 - b1) * to_np(g[k])
            nu[k] = b2 * nu[k] + (1 - b2) * to_np(g[k]) ** 2
    return mu, nu


def _paths(found):
    return [keystr(p) for p, _ in found]


def test_get_on_adam_matches_numpy_and_optax():
    state, ostate = _run(gradtx.adam(0.1)), _run(optax.adam(0.1))
    mu, nu = _np_adam_moments()
    assert int(gtree.get(state, "count")) == 2 == int(optax.tree.get(ostate, "count"))
    for name, want in (("mu", mu), ("nu", nu)):
        got = gtree.get(state, name)
        check(got, optax.tree.get(ostate, name), want)
    for key in ("count", "mu", "nu", "w", "ScaleByAdamState", "EmptyState", "learning_rate"):
        assert _paths(gtree.get_all_with_path(state, key)) == _paths(
            optax.tree.get_all_with_path(ostate, key)
        )
    assert gtree.get(state, "learning_rate") is None  # plain adam keeps no learning rate
    assert gtree.get(state, "learning_rate", 7) == 7 == optax.tree.get(ostate, "learning_rate", 7)
    assert type(gtree.get(state, "ScaleByAdamState")).__name__ == "ScaleByAdamState"


def test_get_on_a_chain_and_ambiguous_keys():
    make = lambda m: m.chain(m.clip_by_global_norm(100.0), m.adam(0.1))  # noqa: E731
    state, ostate = _run(make(gradtx)), _run(make(optax))
    assert _paths(gtree.get_all_with_path(state, "EmptyState")) == ["[0]", "[1][1]"]
    assert _paths(gtree.get_all_with_path(state, "w")) == _paths(
        optax.tree.get_all_with_path(ostate, "w")
    )
    with pytest.raises(KeyError, match="get: 'w' matches 2 values"):
        gtree.get(state, "w")
    with pytest.raises(KeyError):
        optax.tree.get(ostate, "w")
    in_mu = lambda path, _: "mu" in keystr(path)  # noqa: E731
    mu, _ = _np_adam_moments()
    np.testing.assert_allclose(gtree.get(state, "w", filtering=in_mu), mu["w"], rtol=1e-6)


def test_get_and_set_on_inject_hyperparams():
    opt = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1)
    state = _run(opt)
    ostate = _run(optax.inject_hyperparams(optax.adam)(learning_rate=0.1))
    for key in ("count", "learning_rate", "hyperparams", "mu", "ScaleByAdamState"):
        assert _paths(gtree.get_all_with_path(state, key)) == _paths(
            optax.tree.get_all_with_path(ostate, key)
        )
    assert _paths(gtree.get_all_with_path(state, "count")) == [
        f"{type(state).__name__}.count",
        f"{type(state).__name__}.inner_state[0]ScaleByAdamState.count",
    ]
    with pytest.raises(KeyError, match="'count' matches 2 values"):
        gtree.get(state, "count")
    with pytest.raises(KeyError):
        optax.tree.get(ostate, "count")
    inner = lambda path, _: path[-1].tuple_name == "ScaleByAdamState"  # noqa: E731
    assert int(gtree.get(state, "count", filtering=inner)) == 2
    np.testing.assert_allclose(float(gtree.get(state, "learning_rate")), 0.1, rtol=1e-7)
    np.testing.assert_allclose(
        float(gtree.get(state, "learning_rate")), float(optax.tree.get(ostate, "learning_rate"))
    )

    new = gtree.set(state, learning_rate=jnp.asarray(0.5))
    assert float(gtree.get(new, "learning_rate")) == 0.5
    assert float(gtree.get(state, "learning_rate")) == pytest.approx(0.1)  # a copy
    assert list(new.hyperparams) == list(state.hyperparams)  # the dict keeps its key order
    # the next update uses it: adam's third step, by NumPy
    g = {"w": jnp.array([1.0, 1.0, 1.0]), "b": jnp.array([1.0, 1.0])}
    upd, _ = opt.update(g, new, PARAMS)
    mu, nu = _np_adam_moments()
    for k in mu:
        m = 0.9 * mu[k] + 0.1 * to_np(g[k])
        v = 0.999 * nu[k] + 0.001 * to_np(g[k]) ** 2
        want = -0.5 * (m / (1 - 0.9**3)) / (np.sqrt(v / (1 - 0.999**3)) + 1e-8)
        np.testing.assert_allclose(upd[k], want, rtol=1e-5)


def test_set_replaces_every_match_or_the_filtered_ones():
    state = _run(gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1))
    both = gtree.set(state, count=jnp.asarray(9, jnp.int32))
    assert [int(v) for _, v in gtree.get_all_with_path(both, "count")] == [9, 9]
    inner = lambda path, _: path[-1].tuple_name == "ScaleByAdamState"  # noqa: E731
    one = gtree.set(state, inner, count=jnp.asarray(9, jnp.int32))
    assert [int(v) for _, v in gtree.get_all_with_path(one, "count")] == [2, 9]
    # a whole record by its class name
    swapped = gtree.set(state, ScaleByAdamState="replaced")
    assert swapped.inner_state[0] == "replaced"
    # the rest of the state is untouched
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(both), strict=True):
        if a.shape:  # the moments
            np.testing.assert_array_equal(a, b)


def test_set_raises_for_missing_keys_like_optax():
    state, ostate = _run(gradtx.adam(0.1)), _run(optax.adam(0.1))
    with pytest.raises(KeyError, match=r"set: no value named 'lr' .*names in it: .*count"):
        gtree.set(state, lr=1.0)
    with pytest.raises(KeyError):
        optax.tree.set(ostate, lr=1.0)
    never = lambda path, value: False  # noqa: E731
    with pytest.raises(KeyError, match="passes the filtering function"):
        gtree.set(state, never, count=1)
    with pytest.raises(KeyError):
        optax.tree.set(ostate, never, count=1)


def test_set_matches_optax_where_optax_replaces_one_value():
    state, ostate = _run(gradtx.adam(0.1)), _run(optax.adam(0.1))
    new, onew = gtree.set(state, count=5), optax.tree.set(ostate, count=5)
    assert new[0].count == onew[0].count == 5
    check(new[0].mu, onew[0].mu, _np_adam_moments()[0])


def test_get_and_set_on_a_gradtx_transform():
    opt = gradtx.sgd(0.1)
    assert gtree.get(opt, "learning_rate") == 0.1
    faster = gtree.set(opt, learning_rate=0.5)
    g = {"w": jnp.array([1.0, -2.0, 4.0]), "b": jnp.array([0.5, 0.0])}
    upd, _ = faster.update(g, faster.init(PARAMS), PARAMS)
    for k in g:
        np.testing.assert_allclose(upd[k], -0.5 * to_np(g[k]), rtol=1e-7)
    # set edits the tree as any tree edit does (unchecked, as values arriving inside jit are);
    # gradtx.replace is the checked way to change a hyperparameter written by hand
    assert gtree.get(gtree.set(gradtx.adam(0.1), b1=0.5), "b1") == 0.5
    with pytest.raises(ValueError, match="b1 must be in"):
        gradtx.replace(gradtx.adam(0.1), b1=1.5)


def test_named_tuple_key():
    key = gtree.NamedTupleKey("ScaleByAdamState", "mu")
    assert str(key) == "ScaleByAdamState.mu"
    assert str(key) == str(optax.tree_utils.NamedTupleKey("ScaleByAdamState", "mu"))
    assert keystr((key, jax.tree_util.DictKey("w"))) == "ScaleByAdamState.mu['w']"
    assert key == gtree.NamedTupleKey("ScaleByAdamState", "mu") and hash(key) == hash(
        gtree.NamedTupleKey("ScaleByAdamState", "mu")
    )


def test_get_all_with_path_finds_matches_inside_matches_in_optax_order():
    tree = {"a": {"a": 1, "b": {"a": 2}}, "c": [{"a": 3}]}
    found = gtree.get_all_with_path(tree, "a")
    want = ["['a']", "['a']['a']", "['a']['b']['a']", "['c'][0]['a']"]
    assert _paths(found) == want == _paths(optax.tree.get_all_with_path(tree, "a"))
    assert [v for _, v in found][1:] == [1, 2, 3]
    assert found[0][1] is tree["a"]


# ----------------------------------------------------------------------------------------------
# map_params on gradtx optimizers.


def _leaves_with_paths(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
    return [(keystr(p), v) for p, v in leaves]


def test_map_params_on_adam_with_numbers_and_with_specs():
    opt, oopt = gradtx.adam(0.1), optax.adam(0.1)
    state, ostate = _run(opt), _run(oopt)
    doubled = gtree.map_params(opt, lambda x: 2 * x, state, transform_non_params=lambda c: c + 10)
    mu, nu = _np_adam_moments()
    check(
        doubled[0].mu,
        optax.tree.map_params(oopt, lambda x: 2 * x, ostate)[0].mu,
        {k: 2 * v for k, v in mu.items()},
    )
    check(
        doubled[0].nu,
        jax.tree_util.tree_map(lambda x: 2 * x, ostate[0].nu),
        {k: 2 * v for k, v in nu.items()},
    )
    assert int(doubled[0].count) == 12  # 2 steps, then + 10: not a params-shaped part

    specs = {"w": P("model"), "b": P()}
    got = gtree.map_params(opt, lambda _, s: s, state, specs, transform_non_params=lambda _: P())
    oracle = optax.tree.map_params(
        oopt, lambda _, s: s, ostate, specs, transform_non_params=lambda _: P()
    )
    assert _leaves_with_paths(got) == _leaves_with_paths(oracle)
    assert got[0].mu == got[0].nu == specs and got[0].count == P()


def test_map_params_with_an_init_function_and_a_chain():
    opt = gradtx.chain(gradtx.clip_by_global_norm(100.0), gradtx.adam(0.1))
    state = _run(opt)
    by_fn = gtree.map_params(opt.init, lambda x, n: x * n, state, {"w": 3.0, "b": -1.0})
    mu, _ = _np_adam_moments()
    np.testing.assert_allclose(by_fn[1][0].mu["w"], 3.0 * mu["w"], rtol=1e-6)
    np.testing.assert_allclose(by_fn[1][0].mu["b"], -1.0 * mu["b"], rtol=1e-6)
    assert int(by_fn[1][0].count) == 2
    with pytest.raises(TypeError, match="map_params: initable must be"):
        gtree.map_params(3, lambda x: x, state)


def test_map_params_on_inject_hyperparams_and_multisteps():
    opt = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1)
    state = _run(opt)
    got = gtree.map_params(opt, lambda x: x.shape, state, transform_non_params=lambda _: None)
    assert got.hyperparams == dict.fromkeys(state.hyperparams)
    assert got.inner_state[0].mu == {"w": (3,), "b": (2,)} == got.inner_state[0].nu

    ms = gradtx.MultiSteps(gradtx.adam(0.1), every_k_schedule=3)
    state = _run(ms)  # two micro-steps: the accumulator holds the mean of the two gradients
    got = gtree.map_params(ms, lambda x: -x, state)
    for k in PARAMS:
        want = -(to_np(GRADS[0][k]) + to_np(GRADS[1][k])) / 2
        np.testing.assert_allclose(got.acc_grads[k], want, rtol=1e-6)
    assert int(got.mini_step) == 2 and int(got.gradient_step) == 0


def test_map_params_on_masked_keeps_the_masked_out_placeholders():
    mask = {"w": True, "b": False}
    opt, oopt = gradtx.masked(gradtx.adam(0.1), mask), optax.masked(optax.adam(0.1), mask)
    state, ostate = _run(opt), _run(oopt)
    masked_node = type(state.inner_state[0].mu["b"])
    mu, _ = _np_adam_moments()
    # no params-shaped tree needed; the masked-out parameter's placeholder stays as it is
    doubled = gtree.map_params(opt, lambda x: 2 * x, state)
    odoubled = optax.tree.map_params(oopt, lambda x: 2 * x, ostate)
    np.testing.assert_allclose(doubled.inner_state[0].mu["w"], 2 * mu["w"], rtol=1e-6)
    np.testing.assert_allclose(
        doubled.inner_state[0].mu["w"], odoubled.inner_state[0].mu["w"], rtol=1e-6
    )
    assert isinstance(doubled.inner_state[0].mu["b"], masked_node)
    assert int(doubled.inner_state[0].count) == 2
    # with specs: optax needs is_leaf for the placeholders, gradtx leaves them as they are
    specs = {"w": "rows", "b": "replicated"}
    got = gtree.map_params(opt, lambda _, s: s, state, specs, transform_non_params=lambda _: None)
    inner = got.inner_state[0]
    assert inner.mu["w"] == inner.nu["w"] == "rows" and inner.count is None
    assert isinstance(inner.mu["b"], masked_node) and isinstance(inner.nu["b"], masked_node)
    with pytest.raises(ValueError):
        optax.tree.map_params(oopt, lambda _, s: s, ostate, specs)
    # with is_leaf, f sees the placeholders, as optax's map_params does
    f = lambda x, s: "masked" if len(jax.tree_util.tree_leaves(x)) == 0 else s  # noqa: E731
    marked = gtree.map_params(opt, f, state, specs, is_leaf=lambda x: isinstance(x, masked_node))
    omarked = optax.tree.map_params(
        oopt, f, ostate, specs, is_leaf=lambda x: isinstance(x, optax.MaskedNode)
    )
    assert marked.inner_state[0].mu == {"w": "rows", "b": "masked"} == omarked.inner_state[0].mu
    # a callable mask
    by_fn = gradtx.masked(gradtx.adam(0.1), lambda p: jax.tree_util.tree_map(lambda x: True, p))
    doubled = gtree.map_params(by_fn, lambda x: 2 * x, _run(by_fn))
    np.testing.assert_allclose(doubled.inner_state[0].mu["b"], 2 * mu["b"], rtol=1e-6)


def test_map_params_on_partition():
    labels = {"w": "adam", "b": "sgd"}
    make = lambda m: m.multi_transform(  # noqa: E731
        {"adam": m.adam(0.1), "sgd": m.sgd(0.1, momentum=0.9)}, labels
    )
    opt = make(gradtx)
    state = _run(opt)
    specs = {"w": "rows", "b": "replicated"}
    got = gtree.map_params(opt, lambda _, s: s, state, specs, transform_non_params=lambda _: None)
    adam_state = got.inner_states["adam"].inner_state[0]
    assert adam_state.mu["w"] == "rows" and adam_state.count is None
    assert jax.tree_util.tree_leaves(adam_state.mu["b"]) == []  # not adam's parameter
    trace = jax.tree_util.tree_leaves(got.inner_states["sgd"], is_leaf=lambda x: x is None)
    assert "replicated" in trace and "rows" not in trace
    # numbers: sgd's momentum trace of b is g1 + 0.9 g0, halved
    halved = gtree.map_params(opt, lambda x: x / 2, state)
    sgd_trace = gtree.get(halved.inner_states["sgd"], "trace")
    want = (to_np(GRADS[1]["b"]) + 0.9 * to_np(GRADS[0]["b"])) / 2
    np.testing.assert_allclose(sgd_trace["b"], want, rtol=1e-6)
    otrace = optax.tree.get(
        optax.tree.map_params(make(optax), lambda x: x / 2, _run(make(optax))), "trace"
    )
    np.testing.assert_allclose(sgd_trace["b"], otrace["b"], rtol=1e-6)


def test_map_params_reports_rest_trees_that_do_not_fit():
    opt = gradtx.adam(0.1)
    with pytest.raises(ValueError, match=r"(?s)map_params: could not find the parts of state"):
        gtree.map_params(opt, lambda _, s: s, _run(opt), {"w": "rows"})  # no spec for b


def test_map_params_on_lookahead():
    opt = gradtx.lookahead(gradtx.adam(0.1), sync_period=5, slow_step_size=0.5)
    params = gradtx.LookaheadParams.init_synced(PARAMS)
    state = _run(opt, params)
    mu, _ = _np_adam_moments()
    halved = gtree.map_params(opt, lambda x: x / 2, state)
    np.testing.assert_allclose(halved.fast_state[0].mu["w"], mu["w"] / 2, rtol=1e-6)
    assert int(halved.steps_since_sync) == 2
    # specs for the (fast, slow) params: the fast optimizer's moments take the fast ones
    specs = gradtx.LookaheadParams(fast={"w": "F", "b": "f"}, slow={"w": "S", "b": "s"})
    got = gtree.map_params(opt, lambda _, s: s, state, specs, transform_non_params=lambda _: 0)
    assert got.fast_state[0].mu == {"w": "F", "b": "f"} and got.steps_since_sync == 0
    # specs for the fast params only (what optax's map_params takes for its lookahead)
    fast_specs = {"w": "F", "b": "f"}
    got = gtree.map_params(opt, lambda _, s: s, state, fast_specs)
    assert got.fast_state[0].nu == fast_specs
    oopt = optax.lookahead(optax.adam(0.1), sync_period=5, slow_step_size=0.5)
    ostate = _run(oopt, optax.LookaheadParams.init_synced(PARAMS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = optax.tree.map_params(oopt, lambda _, s: s, ostate, fast_specs)
    assert _leaves_with_paths(got) == _leaves_with_paths(oracle)
