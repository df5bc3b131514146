"""Internal numerics shared by every transform: moments, bias correction, norms, the step
counter, dtypes, per-step scalars and structure checks.

Transforms call these instead of repeating the arithmetic, so a numerical fix lands in one place.
This module is gradtx's own plumbing; the public tree math, with optax's names and meanings, is
:mod:`gradtx.tree`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.shard_alike import shard_alike

__all__ = [
    "is_none",
    "tree_map_none",
    "full_like",
    "tree_zeros_like",
    "tree_full_like",
    "tree_zeros_like_output",
    "tree_cast",
    "tree_cast_like",
    "tree_add",
    "tree_sub",
    "tree_scale",
    "tree_vdot",
    "tree_sum",
    "tree_l2_norm",
    "global_norm",
    "update_moment",
    "update_moment_per_elem_norm",
    "bias_correction",
    "bias_correction_scalar",
    "safe_increment",
    "abs_sq",
    "real_dtype",
    "compute_dtype",
    "check_structure",
    "first_difference",
    # per-leaf arithmetic without per-operation dispatch (for writing fast transforms)
    "Scalar",
    "cast",
    "as_array",
    "smul",
    "ema_leaf",
    "sqnorm",
]

_INT32_MAX = np.iinfo(np.int32).max


def is_none(x: Any) -> bool:
    """``x is None``: the ``is_leaf`` that keeps ``None`` placeholders (masked-out leaves)."""
    return x is None


def tree_map_none(f: Any, *trees: Any) -> Any:
    """``jax.tree_util.tree_map`` that hands ``None`` leaves to ``f`` instead of skipping them."""
    return jax.tree_util.tree_map(f, *trees, is_leaf=is_none)


_map = tree_map_none


def full_like(x: Any, value: Any, dtype: Any = None) -> jax.Array:
    """``value`` in the shape of ``x`` (in ``dtype``, else ``x``'s), sharded like ``x``.

    State that mirrors a parameter must live on the parameter's devices with its sharding, also
    when ``init`` runs under ``jax.jit``. A concrete array's sharding is copied directly. Under a
    trace a constant has no operand to take a sharding from (XLA would leave it on one device),
    so the result is tied to ``x`` with ``shard_alike``, which XLA resolves when it propagates
    shardings.
    """
    dtype = dtype or _dtype(x)
    shape = jnp.shape(x)
    if isinstance(x, jax.core.Tracer):
        return shard_alike(x, jnp.full_like(x, value, dtype=dtype))[1]
    if isinstance(x, jax.Array):
        return jnp.full_like(x, value, dtype=dtype)
    return jnp.full(shape, value, dtype)


def tree_zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Zeros shaped (and sharded) like each leaf, in ``dtype`` if given (else the leaf's)."""
    return _map(lambda x: None if x is None else full_like(x, 0, dtype), tree)


def tree_full_like(tree: Any, value: Any, dtype: Any = None) -> Any:
    """``value`` broadcast to each leaf's shape (and sharding), in ``dtype`` if given."""
    return _map(lambda x: None if x is None else full_like(x, value, dtype), tree)


def tree_zeros_like_output(fn: Any, *args: Any) -> Any:
    """Zeros shaped like what ``fn(*args)`` would return, without running it (``eval_shape``).

    Used where a wrapper skips its inner transform but must still output that transform's
    structure, shapes and dtypes.
    """
    return jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(fn, *args))


def tree_cast(tree: Any, dtype: Any) -> Any:
    """Cast every leaf to ``dtype`` (no-op when ``dtype`` is ``None``)."""
    if dtype is None:
        return tree
    dtype = np.dtype(dtype)
    return _map(lambda x: None if x is None else cast(x, dtype), tree)


def tree_cast_like(tree: Any, like: Any) -> Any:
    """Cast every leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return _map(lambda x, y: None if y is None else cast(x, _dtype(y)), tree, like)


def tree_add(a: Any, b: Any) -> Any:
    """Leaf-wise ``a + b``."""
    return _map(lambda x, y: None if x is None else x + y, a, b)


def tree_sub(a: Any, b: Any) -> Any:
    """Leaf-wise ``a - b``."""
    return _map(lambda x, y: None if x is None else x - y, a, b)


def tree_scale(s: Any, tree: Any) -> Any:
    """Leaf-wise ``s * x`` (``s`` a scalar), keeping each leaf's dtype."""
    s = Scalar(s)
    return _map(lambda x: None if x is None else smul(x, s), tree)


def tree_vdot(a: Any, b: Any) -> jax.Array:
    """``sum_i <a_i, b_i>`` over all leaves (conjugating ``a``), as a scalar."""
    parts = jax.tree_util.tree_leaves(
        _map(lambda x, y: None if x is None else jnp.vdot(x, y), a, b)
    )
    return sum(parts) if parts else jnp.zeros(())


def tree_sum(tree: Any) -> jax.Array:
    """Sum of every element of every leaf."""
    parts = [jnp.sum(x) for x in jax.tree_util.tree_leaves(tree)]
    return sum(parts) if parts else jnp.zeros(())


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|^2`` element-wise, real-valued for complex ``x``."""
    x = as_array(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        re, im = lax.real(x), lax.imag(x)
        return lax.add(lax.mul(re, re), lax.mul(im, im))
    return lax.mul(x, x)


def tree_l2_norm(tree: Any, squared: bool = False) -> jax.Array:
    """The 2-norm of all leaves taken together (``||vec(tree)||``), accumulated in >= float32."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.zeros(())
    parts = [sqnorm(x) for x in leaves]
    dtype = jnp.result_type(*parts)
    sq = parts[0] if len(parts) == 1 else jnp.sum(jnp.stack([cast(x, dtype) for x in parts]))
    return sq if squared else lax.sqrt(sq)


def global_norm(updates: Any) -> jax.Array:
    """The global norm ``sqrt(sum_i ||u_i||^2)`` over every parameter, correct at any finite
    scale (:func:`gradtx.safe_math._global_norm`: ``tree_l2_norm`` bit for bit unless the sum
    of squares over- or underflows)."""
    from gradtx.safe_math import _global_norm  # safe_math imports this module

    return _global_norm(updates)


def update_moment(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Exponential moving average of ``g ** order``: ``m ← decay·m + (1 − decay)·g^order``.

    Computed in the moment's compute dtype (float32 for 16-bit moments) and stored in the
    moment's dtype (so ``mu_dtype`` state stays in its dtype); see :func:`ema_leaf`.
    """

    b, one_minus_b = Scalar(decay), Scalar(1 - decay)

    def f(g, m):
        if g is None:
            return None
        m = as_array(m)
        gm = cast(g, compute_dtype(m.dtype))
        p = gm if order == 1 else (lax.mul(gm, gm) if order == 2 else lax.integer_pow(gm, order))
        return ema_leaf(p, m, b, one_minus_b)

    return _map(f, updates, moments)


def update_moment_per_elem_norm(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Exponential moving average of ``|g| ** order`` (real-valued for complex ``g``).

    For ``order == 2`` this is the second moment ``v ← decay·v + (1 − decay)·|g|^2``.
    """

    b, one_minus_b = Scalar(decay), Scalar(1 - decay)

    def f(g, m):
        if g is None:
            return None
        p = abs_sq(as_array(g)) if order == 2 else jnp.abs(g) ** order
        return ema_leaf(p, m, b, one_minus_b)

    return _map(f, updates, moments)


def bias_correction(moment: Any, decay: Any, count: jax.Array) -> Any:
    """Adam's bias correction ``m̂ = m / (1 − decay^t)`` with ``t = count`` (count >= 1)."""

    corrections: dict[Any, Any] = {}  # 1 − decay^t, computed once per dtype, not once per leaf

    def f(m):
        if m is None:
            return None
        m = as_array(m)
        cd = compute_dtype(m.dtype)
        rd = real_dtype(cd)
        corr = corrections.get(rd)
        if corr is None:
            corr = corrections[rd] = bias_correction_scalar(decay, count, rd)
        return lax.div(cast(m, cd), cast(corr, cd))

    return _map(f, moment)


def bias_correction_scalar(decay: Any, count: Any, dtype: Any = None) -> jax.Array:
    """The scalar ``1 − decay^t`` (``t = count``), in ``dtype`` (default: JAX's default float
    dtype, float32 or float64 with x64). Computed once per step, never per leaf."""
    if dtype is None:
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    return 1 - jnp.asarray(decay, dtype=dtype) ** jnp.asarray(count).astype(dtype)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1`` for an int32 step counter, saturating at ``2**31 - 1`` instead of wrapping."""
    count = jnp.asarray(count)
    if count.dtype == jnp.int32:
        return jnp.where(count < _INT32_MAX, count + 1, _INT32_MAX).astype(jnp.int32)
    return count + 1


def _dtype(x: Any) -> Any:
    return jnp.result_type(x)


def real_dtype(dtype: Any) -> Any:
    """The real counterpart of a dtype (``complex64 -> float32``); real dtypes map to themselves."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.finfo(dtype).dtype
    return dtype


def compute_dtype(dtype: Any) -> Any:
    """The dtype arithmetic is carried out in: float16/bfloat16 are promoted to float32.

    Low-precision formats cannot represent typical ``eps`` values (1e-8 underflows to zero in
    float16, so ``0 / (sqrt(0) + eps)`` would be NaN); transforms compute their normalised
    update in this dtype and cast the result back.
    """
    dtype = jnp.dtype(dtype)
    if dtype in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16)):
        return jnp.dtype(jnp.float32)
    return dtype


# ----------------------------------------------------------------------------------------------
# Structure checks with readable paths.


def first_difference(
    a: Any, b: Any, names: tuple[str, str] | None = None
) -> tuple[str, str] | None:
    """Where two trees first differ in structure or leaf shape: ``(path, why)``, or ``None``.

    The trees are walked together from the root and ``path`` is in
    :func:`jax.tree_util.keystr` form (``""`` for the root). What is reported:

    - nodes of different kinds: the node's path and both kinds, ``("['a']", "list vs dict")``
      (a leaf reads ``leaf of shape (2,)``; ``None``, a masked-out leaf, matches any leaf);
    - dicts with different keys: the path of the first key found in only one of them;
    - lists or tuples of different lengths: the sequence's path and both lengths;
    - leaves of different shapes: the leaf's path and both shapes.

    ``names`` (what ``a`` and ``b`` are, e.g. ``("updates", "params")``) lets a missing key say
    which tree lacks it; without it the reason is "present in only one of them".

    Example:
        >>> import numpy as np
        >>> from gradtx import numerics
        >>> numerics.first_difference({"a": [np.ones(2)]}, {"a": {"x": np.ones(2)}})
        ("['a']", 'list vs dict')
        >>> numerics.first_difference({"a": np.ones(2)}, {"b": np.ones(2)}, ("updates", "params"))
        ("['a']", 'missing from the params')
    """
    return _first_difference(a, b, "", names)


def _is_tree_leaf(x: Any) -> bool:
    if x is None:
        return True
    treedef = jax.tree_util.tree_structure(x)  # an empty container is one node, but no leaf
    return treedef.num_nodes == 1 and treedef.num_leaves == 1


def _one_level(x: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """The treedef of ``x`` cut one level down, and its children as ``(key string, child)``."""
    kids, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda n: n is not x)
    return treedef, [(jax.tree_util.keystr(p), c) for p, c in kids]


def _kind(x: Any, treedef: Any) -> str:
    if x is None:
        return "None"
    if treedef is None:
        return f"leaf of shape {_shape(x)}"
    return treedef.node_data()[0].__name__


def _first_difference(a: Any, b: Any, path: str, names: Any) -> tuple[str, str] | None:
    leaf_a, leaf_b = _is_tree_leaf(a), _is_tree_leaf(b)
    if leaf_a and leaf_b:
        if a is None or b is None:
            return None
        sa, sb = _shape(a), _shape(b)
        return None if sa == sb else (path, f"shape {sa} vs {sb}")
    td_a, kids_a = (None, []) if leaf_a else _one_level(a)
    td_b, kids_b = (None, []) if leaf_b else _one_level(b)
    kind_a, kind_b = _kind(a, td_a), _kind(b, td_b)
    if leaf_a or leaf_b or td_a.node_data()[0] is not td_b.node_data()[0]:
        return (path, f"{kind_a} vs {kind_b}")
    keys_a, keys_b = [k for k, _ in kids_a], [k for k, _ in kids_b]
    if keys_a != keys_b:
        if isinstance(a, (list, tuple)):
            return (path, f"{kind_a} of {len(keys_a)} entries vs {len(keys_b)}")
        only_a = [k for k in keys_a if k not in set(keys_b)]
        only_b = [k for k in keys_b if k not in set(keys_a)]
        if only_a or only_b:
            in_a = bool(only_a) and (not only_b or only_a[0] <= only_b[0])
            key = only_a[0] if in_a else only_b[0]
            if names is None:
                why = "present in only one of them"
            else:
                why = f"missing from the {names[1] if in_a else names[0]}"
            return (path + key, why)
    else:
        for (key, x), (_, y) in zip(kids_a, kids_b, strict=True):
            diff = _first_difference(x, y, path + key, names)
            if diff is not None:
                return diff
    if td_a != td_b:  # same kind and keys, other static data (e.g. a record's static fields)
        return (path, f"{kind_a} with different static data")
    return None


def check_structure(updates: Any, reference: Any, owner: str, what: str, ref_name: str) -> None:
    """Raise ``ValueError`` naming the first path where ``updates`` and ``reference`` differ
    (see :func:`first_difference`).

    This runs at trace time (structures and shapes are static), so it costs nothing in a jitted
    step.
    """
    if reference is None:
        return
    la, ta = jax.tree_util.tree_flatten(updates, is_leaf=is_none)
    lb, tb = jax.tree_util.tree_flatten(reference, is_leaf=is_none)
    if ta == tb and all(
        x is None or y is None or _shape(x) == _shape(y) for x, y in zip(la, lb, strict=True)
    ):
        return  # the common case, decided without building key paths
    diff = first_difference(updates, reference, names=(what, ref_name))
    if diff is not None:
        path, why = diff
        where = path if path else "the root"
        raise ValueError(
            f"{owner}: the structure of {what} differs from the {ref_name} at {where}: {why}"
        )


def _shape(x: Any) -> tuple:
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else np.shape(x)


# ----------------------------------------------------------------------------------------------
# Per-leaf arithmetic without per-operation dispatch.
#
# ``jax.numpy`` operators re-enter a jitted wrapper on every call, which costs tens of
# microseconds per operation while tracing: an Adam step on 1,000 leaves made about 25,000. These
# helpers bind ``lax`` primitives directly on operands of one dtype, with the per-step scalars
# (decays, bias corrections, learning rates) converted once per dtype by :class:`Scalar`.


def as_array(x: Any) -> jax.Array:
    """``x`` as a JAX array (tracers and arrays are returned as they are)."""
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def cast(x: Any, dtype: Any) -> jax.Array:
    """``x`` in ``dtype``; no operation at all when it already has that dtype."""
    x = as_array(x)
    return x if x.dtype == dtype else lax.convert_element_type(x, dtype)


class Scalar:
    """A per-step scalar (a hyperparameter or a value derived from the step count), converted
    to each dtype it meets once, not once per leaf.

    ``Scalar(0.9)(jnp.float32)`` is the value as a 0-d float32 constant; a traced value (a
    hyperparameter leaf under ``jit``/``vmap``/``grad``) is converted with one operation per
    dtype. A non-scalar value (rare: a per-element hyperparameter) is kept for broadcasting.
    """

    __slots__ = ("value", "_by_dtype")

    def __init__(self, value: Any):
        self.value = value.value if isinstance(value, Scalar) else value
        self._by_dtype: dict[Any, Any] = {}

    def __call__(self, dtype: Any) -> Any:
        out = self._by_dtype.get(dtype)
        if out is None:
            v = self.value
            if isinstance(v, bool | int | float | complex | np.number | np.ndarray):
                dt = np.dtype(dtype)
                if np.iscomplexobj(v) and not jnp.issubdtype(dt, jnp.complexfloating):
                    v = np.real(v)
                out = np.asarray(v, dtype=dt)
            else:
                out = cast(v, dtype)
            self._by_dtype[dtype] = out
        return out


def smul(x: Any, s: Scalar) -> jax.Array:
    """``s · x`` in ``x``'s dtype (``s`` a :class:`Scalar`)."""
    x = as_array(x)
    c = s(x.dtype)
    if np.ndim(c) == 0:
        return lax.mul(x, c)
    return cast(x * c, x.dtype)


def ema_leaf(x: Any, m: Any, b: Scalar, one_minus_b: Scalar) -> jax.Array:
    """One leaf of an exponential moving average, ``b·m + (1 − b)·x``, computed in the moment's
    compute dtype (float32 for 16-bit moments) and stored in the moment's dtype."""
    m = as_array(m)
    cd = compute_dtype(m.dtype)
    out = lax.add(smul(cast(x, cd), one_minus_b), smul(cast(m, cd), b))
    return cast(out, m.dtype)


def sqnorm(x: Any) -> jax.Array:
    """``Σ |x_i|²`` of one leaf, accumulated in at least float32 (a real scalar)."""
    x = as_array(x)
    x = cast(x, compute_dtype(x.dtype))
    return lax.reduce_sum(abs_sq(x), tuple(range(x.ndim)))
