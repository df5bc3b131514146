"""Tree math with optax's names and meanings: ``gradtx.tree`` is what ``optax.tree`` is.

After ``import gradtx as optax``, ``optax.tree.norm(grads)``, ``optax.tree.get(state, "count")``
and ``optax.tree.map_params(opt, fn, state, specs)`` work as in optax 0.2.8: the same argument
names, defaults, dtype promotion (plain JAX promotion of the operands, so a Python scalar keeps a
leaf's dtype) and ``None`` handling (``None`` is an empty subtree; in :func:`add_scale` and the
moment updates a ``None`` in the first tree gives ``None``, whatever the other tree holds).

Results have optax's dtypes; where optax computes a low-precision intermediate and promotes it
afterwards (the bfloat16 partial sum of one leaf in a float32 norm, ``g**2`` of a bfloat16
gradient in a float32 moment), gradtx widens first (to the result dtype, at least float32), so
its values are the more accurate ones.

The same functions under their ``tree_``-prefixed names are :mod:`gradtx.tree_utils`. gradtx's
own transforms use the internal helpers of :mod:`gradtx.numerics` instead (they keep the state
in its dtype and accumulate low-precision moments in float32).
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import inspect
import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import numerics
from gradtx.numerics import abs_sq, compute_dtype, real_dtype

__all__ = [
    "add",
    "add_scale",
    "allclose",
    "batch_shape",
    "bias_correction",
    "cast",
    "cast_like",
    "clip",
    "conj",
    "div",
    "dtype",
    "full_like",
    "get",
    "get_all_with_path",
    "map_params",
    "max",
    "min",
    "mul",
    "norm",
    "ones_like",
    "random_like",
    "real",
    "scale",
    "set",
    "size",
    "split_key_like",
    "sub",
    "sum",
    "unwrap_random_key_data",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "vdot",
    "where",
    "zeros_like",
    "NamedTupleKey",
]

ArrayLike = jax.typing.ArrayLike
DTypeLike = jax.typing.DTypeLike
KeyPath = tuple[Any, ...]

_tmap = jax.tree_util.tree_map


def _is_none(x: Any) -> bool:
    return x is None


# ----------------------------------------------------------------------------------------------
# Arithmetic.


def add(tree_x: Any, tree_y: Any, *other_trees: Any) -> Any:
    """Leaf-wise sum of two or more trees: ``x + y (+ z + ...)``.

    Args:
        tree_x: a pytree.
        tree_y: a pytree with the structure of ``tree_x``.
        *other_trees: more pytrees with that structure, added too.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.add({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, 4.0])})
        {'a': Array([4., 6.], dtype=float32)}
    """
    return _tmap(lambda *xs: functools.reduce(operator.add, xs), tree_x, tree_y, *other_trees)


def sub(tree_x: Any, tree_y: Any) -> Any:
    """Leaf-wise difference ``x − y``.

    Args:
        tree_x: a pytree.
        tree_y: a pytree with the structure of ``tree_x``.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.sub({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, 4.0])})
        {'a': Array([-2., -2.], dtype=float32)}
    """
    return _tmap(operator.sub, tree_x, tree_y)


def mul(tree_x: Any, tree_y: Any) -> Any:
    """Leaf-wise (Hadamard) product ``x ⊙ y``.

    Args:
        tree_x: a pytree.
        tree_y: a pytree with the structure of ``tree_x``.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.mul({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, 4.0])})
        {'a': Array([3., 8.], dtype=float32)}
    """
    return _tmap(operator.mul, tree_x, tree_y)


def div(tree_x: Any, tree_y: Any) -> Any:
    """Leaf-wise quotient ``x / y``.

    Args:
        tree_x: a pytree.
        tree_y: a pytree with the structure of ``tree_x``.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.div({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([4.0, 4.0])})
        {'a': Array([0.25, 0.5 ], dtype=float32)}
    """
    return _tmap(operator.truediv, tree_x, tree_y)


def scale(scalar: ArrayLike, tree: Any) -> Any:
    """Every leaf multiplied by one scalar: ``s · x``.

    Args:
        scalar: the factor ``s`` (a Python scalar keeps each leaf's dtype; a typed array
            promotes with it).
        tree: a pytree.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.scale(0.5, {"a": jnp.array([2.0, 4.0])})
        {'a': Array([1., 2.], dtype=float32)}
    """
    return _tmap(lambda x: scalar * x, tree)


def add_scale(tree_x: Any, scalar: ArrayLike, tree_y: Any) -> Any:
    """``x + s · y`` leaf by leaf (an axpy); a ``None`` leaf of ``tree_x`` stays ``None``.

    Args:
        tree_x: a pytree (``None`` leaves are kept as ``None``).
        scalar: the factor ``s`` applied to ``tree_y``.
        tree_y: a pytree with the structure of ``tree_x``.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.add_scale({"a": jnp.array([1.0]), "b": None}, 2.0,
        ...                       {"a": jnp.array([3.0]), "b": jnp.array([5.0])})
        {'a': Array([7.], dtype=float32), 'b': None}
    """
    s = jnp.asarray(scalar)
    return _tmap(lambda x, y: None if x is None else x + s * y, tree_x, tree_y, is_leaf=_is_none)


# Reductions give the dtype optax's give (each leaf's partial result, promoted across leaves),
# but each leaf is first cast to the accumulation dtype (the promoted result, at least float32),
# so a bfloat16 leaf's partial sum is not rounded to bfloat16 before it meets a float32 one.


@functools.cache
def _sum_dtype(dt: Any) -> Any:
    """The dtype ``jnp.sum`` gives for a leaf of dtype ``dt`` (small ints and bools widen)."""
    dt = jnp.dtype(dt)
    if jnp.issubdtype(dt, jnp.inexact):
        return dt
    return jax.eval_shape(jnp.sum, jax.ShapeDtypeStruct((), dt)).dtype


def _acc_dtype(final: Any) -> Any:
    return compute_dtype(final) if jnp.issubdtype(final, jnp.inexact) else jnp.dtype(final)


def _widen(x: Any, acc: Any) -> jax.Array:
    """``x`` in the accumulation dtype (keeping it complex when it is)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, acc))


def _promoted(dtypes: Any) -> Any:
    return functools.reduce(jnp.promote_types, dtypes)


def _accumulate(parts: list, final: Any, pairwise: bool = False) -> jax.Array:
    total = _pairwise_sum(parts) if pairwise else functools.reduce(operator.add, parts)
    return total.astype(final)


def _dot_leaf(x: jax.Array, y: jax.Array, acc: Any) -> jax.Array:
    """``Σ conj(x)·y`` of one leaf pair, multiplied at full precision in ``acc``."""
    x, y = _widen(x, acc), _widen(y, acc)
    dt = jnp.promote_types(x.dtype, y.dtype)
    x, y = x.astype(dt), y.astype(dt)
    if jnp.issubdtype(dt, jnp.complexfloating):
        x = jnp.conj(x)
    axes = tuple(range(x.ndim))
    return lax.dot_general(
        x, y, ((axes, axes), ((), ())), precision=lax.Precision.HIGHEST, preferred_element_type=dt
    )


def vdot(tree_x: Any, tree_y: Any) -> ArrayLike:
    """Inner product of two trees, ``⟨x, y⟩ = Σ_leaves Σ_i conj(x_i) · y_i`` (a scalar).

    Products are taken at full precision; the result has the promoted dtype of the leaves.

    Args:
        tree_x: a pytree (conjugated when complex).
        tree_y: a pytree with the structure of ``tree_x``.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.vdot({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, 4.0])})
        Array(11., dtype=float32)
    """
    xs, treedef = jax.tree_util.tree_flatten(tree_x)
    ys = treedef.flatten_up_to(tree_y)
    if not xs:
        return jnp.asarray(0)
    final = _promoted(jnp.result_type(x, y) for x, y in zip(xs, ys, strict=True))
    acc = _acc_dtype(final)
    return _accumulate([_dot_leaf(x, y, acc) for x, y in zip(xs, ys, strict=True)], final)


def _pairwise_sum(parts: list) -> Any:
    while len(parts) > 1:
        nxt = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0]


def sum(tree: Any, associative_reduction: bool = False) -> ArrayLike:
    """Sum of every element of every leaf, ``Σ_leaves Σ_i x_i``.

    Args:
        tree: a pytree.
        associative_reduction: add the per-leaf sums pairwise (a balanced tree of additions,
            which traces faster for very many leaves) instead of left to right; the rounding
            may differ in the last bits.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.sum({"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)})
        Array(6., dtype=float32)
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.asarray(0)
    final = _promoted(_sum_dtype(_leaf_dtype(x)) for x in leaves)
    acc = _acc_dtype(final)
    return _accumulate([jnp.sum(_widen(x, acc)) for x in leaves], final, associative_reduction)


def _extreme(tree: Any, reduce: Callable, combine: Callable, empty: float) -> ArrayLike:
    parts = [reduce(x) for x in jax.tree_util.tree_leaves(tree) if np.size(x) > 0]
    return functools.reduce(combine, parts) if parts else empty


def max(tree: Any) -> ArrayLike:
    """Largest element of all leaves, ``max_leaves max_i x_i`` (``-inf`` for an empty tree).

    Args:
        tree: a pytree (empty leaves are ignored).

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.max({"a": jnp.array([1.0, 5.0]), "b": jnp.array(3.0)})
        Array(5., dtype=float32)
    """
    return _extreme(tree, jnp.max, jnp.maximum, -float("inf"))


def min(tree: Any) -> ArrayLike:
    """Smallest element of all leaves, ``min_leaves min_i x_i`` (``inf`` for an empty tree).

    Args:
        tree: a pytree (empty leaves are ignored).

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.min({"a": jnp.array([1.0, 5.0]), "b": jnp.array(-3.0)})
        Array(-3., dtype=float32)
    """
    return _extreme(tree, jnp.min, jnp.minimum, float("inf"))


def size(tree: Any) -> int:
    """Number of elements in all leaves together, ``Σ_leaves size(x)``.

    Args:
        tree: a pytree.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.size({"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)})
        16
    """
    return builtins.sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(tree))


def conj(tree: Any) -> Any:
    """Complex conjugate of every leaf, ``x̄`` (real leaves are returned unchanged in value).

    Args:
        tree: a pytree.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.conj({"z": jnp.array([1 + 2j])})
        {'z': Array([1.-2.j], dtype=complex64)}
    """
    return _tmap(jnp.conj, tree)


def real(tree: Any) -> Any:
    """Real part of every leaf, ``Re(x)``.

    Args:
        tree: a pytree.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.real({"z": jnp.array([1 + 2j])})
        {'z': Array([1.], dtype=float32)}
    """
    return _tmap(jnp.real, tree)


def _ord_kind(ord: Any) -> str:
    if ord is None or (not isinstance(ord, str) and ord == 2):
        return "2"
    if isinstance(ord, str):
        if ord in ("inf", "infinity"):
            return "inf"
    elif ord == 1:
        return "1"
    elif ord == float("inf"):
        return "inf"
    raise ValueError(f"norm: ord must be None, 1, 2, inf or 'inf', got {ord!r}")


def norm(
    tree: Any,
    ord: int | str | float | None = None,
    squared: bool = False,
) -> jax.Array:
    """Vector norm of all leaves taken together, as if concatenated into one vector.

    ``ord=None`` or ``2``: ``‖x‖₂ = sqrt(Σ |x_i|²)``; ``ord=1``: ``Σ |x_i|``;
    ``ord=inf`` (or ``'inf'``, ``'infinity'``): ``max |x_i|``. ``squared=True`` returns the
    square of the norm. Complex leaves count their modulus. The result has the promoted real
    dtype of the leaves; the norm of an empty tree is 0.

    Args:
        tree: a pytree.
        ord: the order of the norm: ``None``/``2``, ``1`` or infinity.
        squared: return ``‖x‖²`` instead of ``‖x‖``.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([-4.0])}
        >>> gradtx.tree.norm(g), gradtx.tree.norm(g, ord=1), gradtx.tree.norm(g, ord="inf")
        (Array(5., dtype=float32), Array(7., dtype=float32), Array(4., dtype=float32))
    """
    kind = _ord_kind(ord)
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.asarray(0.0)
    final = _promoted(_sum_dtype(real_dtype(_leaf_dtype(x))) for x in leaves)
    acc = _acc_dtype(final)
    if kind == "2":
        sq = functools.reduce(operator.add, [jnp.sum(abs_sq(_widen(x, acc))) for x in leaves])
        if squared:
            return sq.astype(final)
        # as the square root of the sum in ``final``: integer sums give JAX's default float
        out_dtype = final if jnp.issubdtype(final, jnp.inexact) else jnp.result_type(float)
        return jnp.sqrt(sq).astype(out_dtype)
    if kind == "1":
        out = functools.reduce(operator.add, [jnp.sum(jnp.abs(_widen(x, acc))) for x in leaves])
    else:
        out = _extreme([jnp.abs(x) for x in leaves], jnp.max, jnp.maximum, 0.0)
        out = jnp.asarray(out).astype(acc)
    return (out * out if squared else out).astype(final)


def batch_shape(tree: Any, shape: tuple[int, ...] = ()) -> Any:
    """Every leaf broadcast to leading batch dimensions: ``x`` of shape ``s`` becomes shape
    ``(*shape, *s)``, each batch entry a copy of ``x``.

    Args:
        tree: a pytree.
        shape: the batch dimensions to put in front.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.batch_shape({"a": jnp.array([1.0, 2.0])}, (3,))["a"].shape
        (3, 2)
    """
    return _tmap(lambda x: jnp.broadcast_to(x, (*shape, *np.shape(x))), tree)


def zeros_like(tree: Any, dtype: DTypeLike | None = None) -> Any:
    """A tree of zeros shaped like ``tree``, in ``dtype`` if given (else each leaf's dtype).

    Args:
        tree: a pytree.
        dtype: the dtype of every output leaf, or ``None`` to keep each leaf's.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.zeros_like({"a": jnp.array([1.0, 2.0])})
        {'a': Array([0., 0.], dtype=float32)}
    """
    return _tmap(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def ones_like(tree: Any, dtype: DTypeLike | None = None) -> Any:
    """A tree of ones shaped like ``tree``, in ``dtype`` if given (else each leaf's dtype).

    Args:
        tree: a pytree.
        dtype: the dtype of every output leaf, or ``None`` to keep each leaf's.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.ones_like({"a": jnp.array([1, 2])}, dtype=jnp.float32)
        {'a': Array([1., 1.], dtype=float32)}
    """
    return _tmap(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def full_like(tree: Any, fill_value: ArrayLike, dtype: DTypeLike | None = None) -> Any:
    """A tree shaped like ``tree`` with every element equal to ``fill_value``.

    Args:
        tree: a pytree.
        fill_value: the value of every element.
        dtype: the dtype of every output leaf, or ``None`` to keep each leaf's.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.full_like({"a": jnp.zeros(2)}, 7.0)
        {'a': Array([7., 7.], dtype=float32)}
    """
    return _tmap(lambda x: jnp.full_like(x, fill_value, dtype=dtype), tree)


def clip(tree: Any, min_value: ArrayLike | None = None, max_value: ArrayLike | None = None) -> Any:
    """Every element clipped to ``[min_value, max_value]``: ``min(max(x, lo), hi)``.

    Args:
        tree: a pytree.
        min_value: the lower bound, or ``None`` for none.
        max_value: the upper bound, or ``None`` for none.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.clip({"a": jnp.array([-2.0, 0.5, 3.0])}, -1.0, 1.0)
        {'a': Array([-1. ,  0.5,  1. ], dtype=float32)}
    """
    return _tmap(lambda x: jnp.clip(x, min_value, max_value), tree)


def where(condition: ArrayLike, tree_x: Any, tree_y: Any) -> Any:
    """Leaf-wise selection ``x if condition else y`` (``condition`` broadcasts to each leaf).

    Args:
        condition: a boolean (scalar or broadcastable array).
        tree_x: the tree taken where ``condition`` is true.
        tree_y: the tree taken elsewhere (same structure as ``tree_x``).

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.where(False, {"a": jnp.array([1.0])}, {"a": jnp.array([2.0])})
        {'a': Array([2.], dtype=float32)}
    """
    return _tmap(lambda x, y: jnp.where(condition, x, y), tree_x, tree_y)


def allclose(
    a: Any,
    b: Any,
    rtol: ArrayLike = 1e-05,
    atol: ArrayLike = 1e-08,
    equal_nan: bool = False,
) -> Any:
    """Whether every pair of leaves is element-wise close: ``|a − b| <= atol + rtol·|b|``.

    Args:
        a: a pytree.
        b: a pytree with the structure of ``a``.
        rtol: relative tolerance.
        atol: absolute tolerance.
        equal_nan: count NaN as equal to NaN.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> bool(gradtx.tree.allclose({"a": jnp.array([1.0])}, {"a": jnp.array([1.0 + 1e-7])}))
        True
    """
    close = jax.tree_util.tree_leaves(
        _tmap(lambda x, y: jnp.allclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan), a, b)
    )
    return functools.reduce(operator.and_, close) if close else True


# ----------------------------------------------------------------------------------------------
# Moments (the building blocks of Adam-style optimizers).


def update_moment(updates: Any, moments: Any, decay: ArrayLike, order: int) -> Any:
    """Exponential moving average of the ``order``-th power: ``m ← (1 − β)·g^k + β·m``.

    ``β = decay``, ``k = order``. A ``None`` leaf of ``updates`` gives ``None``. The result has
    the promoted dtype of ``g``, ``m`` and ``decay`` (plain JAX promotion).

    Args:
        updates: the gradients ``g``.
        moments: the current moments ``m`` (same structure).
        decay: ``β``.
        order: ``k`` (1 for the mean, 2 for the uncentred second moment).

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.update_moment({"a": jnp.array([2.0])}, {"a": jnp.array([1.0])}, 0.5, 2)
        {'a': Array([2.5], dtype=float32)}
    """

    def f(g: Any, m: Any) -> Any:
        if g is None:
            return None
        final = jnp.result_type(g, m, decay)
        acc = _acc_dtype(final)
        return ((1 - decay) * _widen(g, acc) ** order + decay * _widen(m, acc)).astype(final)

    return _tmap(f, updates, moments, is_leaf=_is_none)


def update_moment_per_elem_norm(updates: Any, moments: Any, decay: ArrayLike, order: int) -> Any:
    """Exponential moving average of the element-wise modulus' power:
    ``v ← (1 − β)·|g|^k + β·v``.

    Real-valued for complex ``g`` (``|g|² = Re(g)² + Im(g)²``). A ``None`` leaf of ``updates``
    gives ``None``.

    Args:
        updates: the gradients ``g``.
        moments: the current moments ``v`` (same structure).
        decay: ``β``.
        order: ``k`` (2 for Adam's second moment).

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> g, v = {"a": jnp.array([3 + 4j])}, {"a": jnp.array([0.0])}
        >>> gradtx.tree.update_moment_per_elem_norm(g, v, 0.5, 2)
        {'a': Array([12.5], dtype=float32)}
    """

    def f(g: Any, v: Any) -> Any:
        if g is None:
            return None
        final = jnp.result_type(real_dtype(_leaf_dtype(g)), v, decay)
        acc = _acc_dtype(final)
        g = _widen(g, acc)
        power = abs_sq(g) if order == 2 else jnp.abs(g) ** order
        return ((1 - decay) * power + decay * _widen(v, acc)).astype(final)

    return _tmap(f, updates, moments, is_leaf=_is_none)


def update_infinity_moment(updates: Any, moments: Any, decay: ArrayLike, eps: ArrayLike) -> Any:
    """The decaying infinity norm of Adamax: ``u ← max(|g| + ε, β·u)``.

    A ``None`` leaf of ``updates`` gives ``None``.

    Args:
        updates: the gradients ``g``.
        moments: the current ``u`` (same structure).
        decay: ``β``.
        eps: ``ε``.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> g, u = {"a": jnp.array([-1.0, 0.1])}, {"a": jnp.array([0.0, 4.0])}
        >>> gradtx.tree.update_infinity_moment(g, u, 0.5, 0.0)
        {'a': Array([1., 2.], dtype=float32)}

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, §7.1.
    """

    def f(g: Any, u: Any) -> Any:
        if g is None:
            return None
        final = jnp.result_type(real_dtype(_leaf_dtype(g)), u, decay, eps)
        acc = _acc_dtype(final)
        out = jnp.maximum(jnp.abs(_widen(g, acc)) + eps, decay * _widen(u, acc))
        return out.astype(final)

    return _tmap(f, updates, moments, is_leaf=_is_none)


def bias_correction(moment: Any, decay: ArrayLike, count: ArrayLike) -> Any:
    """Adam's bias correction ``m̂ = m / (1 − β^t)`` (``β = decay``, ``t = count >= 1``).

    ``1 − β^t`` is computed once, in float32 (float64 with x64), then cast to each leaf's
    dtype; the result keeps each leaf's dtype (a bfloat16 moment stays bfloat16).

    Args:
        moment: the moments ``m`` (a pytree).
        decay: ``β``.
        count: the step count ``t``.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.bias_correction({"a": jnp.array([0.25])}, 0.5, jnp.asarray(2))
        {'a': Array([0.33333334], dtype=float32)}

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, §3.
    """
    corr = numerics.bias_correction_scalar(decay, count)  # 1 − β^t, once for the tree
    by_dtype: dict[Any, Any] = {}

    def f(m: Any) -> Any:
        m = jnp.asarray(m)
        c = by_dtype.get(m.dtype)
        if c is None:
            c = by_dtype[m.dtype] = corr.astype(m.dtype)
        return m / c

    return _tmap(f, moment)


# ----------------------------------------------------------------------------------------------
# Dtypes.


def cast(tree: Any, dtype: DTypeLike | None) -> Any:
    """Every leaf cast to ``dtype``; the tree unchanged when ``dtype`` is ``None``.

    Args:
        tree: a pytree of arrays.
        dtype: the target dtype, or ``None`` to skip.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.cast({"a": jnp.array([1.5])}, jnp.bfloat16)
        {'a': Array([1.5], dtype=bfloat16)}
    """
    if dtype is None:
        return tree
    return _tmap(lambda x: _astype(x, dtype), tree)


def _astype(x: Any, dtype: Any) -> Any:
    return x.astype(dtype) if hasattr(x, "astype") else jnp.asarray(x, dtype=dtype)


def cast_like(tree: Any, other_tree: Any) -> Any:
    """Every leaf of ``tree`` cast to the dtype of the matching leaf of ``other_tree`` (leaves
    of ``other_tree`` without a dtype, e.g. Python numbers, leave theirs unchanged).

    Args:
        tree: the pytree to cast.
        other_tree: a pytree with the same structure giving the dtypes.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> gradtx.tree.cast_like({"a": jnp.array([1.0])}, {"a": jnp.array([0], jnp.int32)})
        {'a': Array([1], dtype=int32)}
    """
    return _tmap(lambda x, o: _astype(x, o.dtype) if hasattr(o, "dtype") else x, tree, other_tree)


def _leaf_dtype(x: Any) -> Any:
    return jnp.asarray(x).dtype if not hasattr(x, "dtype") else jnp.dtype(x.dtype)


def _lower(d1: Any, d2: Any) -> Any:
    joined = jnp.promote_types(d1, d2)
    if joined == d1:
        return d2
    if joined == d2:
        return d1
    raise ValueError(
        f"dtype: {d1} and {d2} cannot be ordered (neither promotes to the other); "
        "use mixed_dtype_handler='promote'"
    )


def _higher(d1: Any, d2: Any) -> Any:
    return d2 if _lower(d1, d2) == d1 else d1


def dtype(tree: Any, mixed_dtype_handler: str | None = None) -> DTypeLike:
    """The dtype of a tree's leaves.

    With ``mixed_dtype_handler=None`` all leaves must share one dtype (``ValueError`` naming
    the leaves that differ otherwise); ``'promote'`` returns the JAX promotion of all dtypes;
    ``'highest'``/``'lowest'`` return the greatest/least dtype in the order ``a <= b`` when
    ``a`` promotes to ``b`` (``ValueError`` for two dtypes that cannot be ordered, e.g. int32
    and uint32). An empty tree has JAX's default float dtype.

    Args:
        tree: a pytree.
        mixed_dtype_handler: ``None``, ``'promote'``, ``'highest'`` or ``'lowest'``.

    Example:
        >>> import jax.numpy as jnp, gradtx.tree
        >>> t = {"a": jnp.ones(1, jnp.float16), "b": jnp.ones(1, jnp.float32)}
        >>> gradtx.tree.dtype(t, "lowest"), gradtx.tree.dtype(t, "highest")
        (dtype('float16'), dtype('float32'))
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if mixed_dtype_handler not in (None, "promote", "highest", "lowest"):
        raise ValueError(
            "dtype: mixed_dtype_handler must be None, 'promote', 'highest' or 'lowest', "
            f"got {mixed_dtype_handler!r}"
        )
    if not leaves:
        return jnp.asarray([]).dtype
    dts = [_leaf_dtype(x) for x in leaves]
    if mixed_dtype_handler is None:
        if any(d != dts[0] for d in dts):
            paths = jax.tree_util.tree_flatten_with_path(tree)[0]
            odd = [
                f"{jax.tree_util.keystr(p)}: {d}"
                for (p, _), d in zip(paths, dts, strict=True)
                if d != dts[0]
            ]
            raise ValueError(
                f"dtype: the leaves have different dtypes (the first is {dts[0]}; "
                f"{', '.join(odd)}); pass mixed_dtype_handler='promote', 'highest' or 'lowest'"
            )
        return dts[0]
    combine = {"promote": jnp.promote_types, "highest": _higher, "lowest": _lower}
    return functools.reduce(combine[mixed_dtype_handler], dts)


# ----------------------------------------------------------------------------------------------
# Random trees.


def split_key_like(rng_key: jax.Array, target_tree: Any) -> Any:
    """One independent key per leaf: ``jax.random.split(rng_key, n_leaves)`` laid out with
    ``target_tree``'s structure (keys in leaf order).

    Args:
        rng_key: a JAX PRNG key (typed or raw).
        target_tree: the tree whose structure to copy.

    Example:
        >>> import jax, gradtx.tree
        >>> keys = gradtx.tree.split_key_like(jax.random.key(0), {"a": 1.0, "b": 2.0})
        >>> sorted(keys)
        ['a', 'b']
    """
    treedef = jax.tree_util.tree_structure(target_tree)
    keys = jax.random.split(rng_key, treedef.num_leaves)
    return jax.tree_util.tree_unflatten(treedef, list(keys))


def _takes_out_sharding(sampler: Callable) -> bool:
    try:
        return "out_sharding" in inspect.signature(sampler).parameters
    except (TypeError, ValueError):
        return False


def random_like(
    rng_key: jax.Array,
    target_tree: Any,
    sampler: Callable[..., ArrayLike] = jax.random.normal,
    dtype: DTypeLike | None = None,
) -> Any:
    """A tree of random arrays shaped like ``target_tree``: leaf ``i`` is
    ``sampler(k_i, shape_i, dtype or dtype_i)`` with ``k_i`` the ``i``-th key of
    :func:`split_key_like`.

    Samplers that take ``out_sharding`` get each leaf's sharding, so the noise is laid out like
    the leaf.

    Args:
        rng_key: a JAX PRNG key.
        target_tree: the tree whose structure, shapes and dtypes to copy (leaves are arrays).
        sampler: ``sampler(key, shape, dtype)``, e.g. ``jax.random.normal`` (default) or
            ``jax.random.uniform``; it must support the dtype it is asked for.
        dtype: the dtype of every output leaf, or ``None`` to use each leaf's.

    Example:
        >>> import jax, jax.numpy as jnp, gradtx.tree
        >>> noise = gradtx.tree.random_like(jax.random.key(0), {"w": jnp.zeros((2, 3))})
        >>> noise["w"].shape, noise["w"].dtype
        ((2, 3), dtype('float32'))
    """
    keys = split_key_like(rng_key, target_tree)
    pass_sharding = _takes_out_sharding(sampler)

    def draw(x: Any, k: jax.Array) -> Any:
        shape, dt = np.shape(x), dtype or _leaf_dtype(x)
        if pass_sharding:
            sharding = jax.typeof(x).sharding if isinstance(x, jax.Array) else None
            return sampler(k, shape, dt, out_sharding=sharding)
        return sampler(k, shape, dt)

    return _tmap(draw, target_tree, keys)


def unwrap_random_key_data(input_tree: Any) -> Any:
    """Typed PRNG key leaves (``jax.random.key``) replaced by their raw ``uint32`` data
    (``jax.random.key_data``), so trees holding keys can be compared numerically; other
    leaves are unchanged.

    Args:
        input_tree: a pytree of arrays and typed keys.

    Example:
        >>> import jax, gradtx.tree
        >>> gradtx.tree.unwrap_random_key_data({"k": jax.random.key(0)})["k"].dtype
        dtype('uint32')
    """

    def unwrap(x: Any) -> Any:
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return _tmap(unwrap, input_tree)


# ----------------------------------------------------------------------------------------------
# Finding values by name in optimizer states.


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """A key-path entry for a field of a named record (a ``NamedTuple`` or a dataclass pytree,
    e.g. ``ScaleByAdamState.count``) in the paths of :func:`get_all_with_path`, :func:`get`
    and :func:`set`.

    It carries the record's class name as well as the field's, so a ``filtering`` function can
    tell apart two ``count`` fields of different states in a chain.

    Args:
        tuple_name: the record's class name (e.g. ``"ScaleByAdamState"``).
        name: the field's name (e.g. ``"count"``).

    Example:
        >>> import jax, gradtx.tree
        >>> jax.tree_util.keystr((gradtx.tree.NamedTupleKey("ScaleByAdamState", "mu"),))
        'ScaleByAdamState.mu'
    """

    tuple_name: str
    name: str

    def __str__(self) -> str:
        return f"{self.tuple_name}.{self.name}"


def _one_level(node: Any) -> tuple[list[tuple[Any, Any]], Any]:
    """``[(jax key entry, child), ...]`` one level down and the treedef that rebuilds ``node``
    from its children; ``([], None)`` for a leaf or a node without children."""
    if node is None:
        return [], None
    flat, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if jax.tree_util.treedef_is_leaf(treedef):
        return [], None
    return [(path[0], child) for path, child in flat], treedef


def _is_record_type(node: Any) -> bool:
    if isinstance(node, tuple):
        return hasattr(type(node), "_fields")
    return dataclasses.is_dataclass(node) and not isinstance(node, type)


class _Node:
    """One node of a tree as :func:`get`/:func:`set` see it: a named record (fields by name),
    a dict (keys), or any other container (only searched through)."""

    __slots__ = ("value", "kind", "entries", "treedef")

    def __init__(self, value: Any):
        self.value = value
        raw, self.treedef = _one_level(value)
        if _is_record_type(value) and all(isinstance(k, jax.tree_util.GetAttrKey) for k, _ in raw):
            self.kind = "record"
            cls = type(value).__name__
            self.entries = [(NamedTupleKey(cls, k.name), c) for k, c in raw]
        elif isinstance(value, dict):
            self.kind = "dict"
            self.entries = raw
        else:
            self.kind = "other"
            self.entries = raw

    @property
    def class_name(self) -> str | None:
        return type(self.value).__name__ if self.kind == "record" else None

    def names(self) -> list[Any]:
        """The names this node answers to: its fields or keys."""
        if self.kind == "record":
            return [k.name for k, _ in self.entries]
        if self.kind == "dict":
            return list(self.value.keys())
        return []

    def has(self, keys: Any) -> bool:
        if self.kind == "record" and self.class_name in keys:
            return True
        own = self.names()
        return any(_contains(own, k) for k in keys)

    def rebuild(self, children: list[Any]) -> Any:
        if type(self.value) is dict:  # keep the caller's key order
            new = {k.key: c for (k, _), c in zip(self.entries, children, strict=True)}
            return {k: new[k] for k in self.value}
        return jax.tree_util.tree_unflatten(self.treedef, children)


def _contains(names: list[Any], key: Any) -> bool:
    try:
        return key in names
    except TypeError:
        return False


def _entry_name(entry: Any) -> Any:
    if isinstance(entry, NamedTupleKey):
        return entry.name
    if isinstance(entry, jax.tree_util.DictKey):
        return entry.key
    return None


def _search(tree: Any, key: Any, path: KeyPath) -> list[tuple[KeyPath, Any]]:
    """Every value named ``key`` below ``tree``: the values at the outermost matching nodes
    first (in leaf order), then, for each of those nodes, the matches inside its children."""
    matched: list[tuple[KeyPath, _Node]] = []

    def walk(value: Any, p: KeyPath) -> None:
        node = _Node(value)
        if node.has((key,)):
            matched.append((p, node))
            return
        for entry, child in node.entries:
            walk(child, (*p, entry))

    walk(tree, path)
    found = []
    for p, node in matched:
        if node.class_name == key:
            found.append((p, node.value))
            continue
        for entry, child in node.entries:
            if _entry_name(entry) == key:
                found.append(((*p, entry), child))
                break
    for p, node in matched:
        for entry, child in node.entries:
            found.extend(_search(child, key, (*p, entry)))
    return found


def get_all_with_path(
    tree: Any,
    key: Any,
    filtering: Callable[[KeyPath, Any], bool] | None = None,
) -> list[tuple[KeyPath, Any]]:
    """Every value in ``tree`` named ``key``, with its path: ``[(path, value), ...]``.

    A value is named ``key`` when it is the field ``key`` of a named record (a ``NamedTuple``
    or a dataclass pytree, such as a gradtx state or transform), the entry ``key`` of a dict,
    or a named record whose class is called ``key`` (e.g. ``"ScaleByAdamState"``). Matches
    nested inside a match are found too. Paths are tuples of JAX key entries, with
    :class:`NamedTupleKey` for record fields; ``jax.tree_util.keystr(path)`` prints one.

    Args:
        tree: the tree to search (an optimizer state, say).
        key: the field, dict key or class name to look for.
        filtering: ``filtering(path, value) -> bool`` keeps only the matches it accepts.

    Example:
        >>> import jax, jax.numpy as jnp, gradtx, gradtx.tree
        >>> opt = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1)
        >>> state = opt.init(jnp.zeros(2))
        >>> for path, value in gradtx.tree.get_all_with_path(state, "count"):
        ...     print(jax.tree_util.keystr(path), value)
        InjectStatefulHyperparamsState.count 0
        InjectStatefulHyperparamsState.inner_state[0]ScaleByAdamState.count 0
    """
    found = _search(tree, key, ())
    if filtering is not None:
        found = [(p, v) for p, v in found if filtering(p, v)]
    return found


def get(
    tree: Any,
    key: Any,
    default: Any | None = None,
    filtering: Callable[[KeyPath, Any], bool] | None = None,
) -> Any:
    """The one value in ``tree`` named ``key`` (see :func:`get_all_with_path` for what
    matches), or ``default`` when there is none.

    Raises ``KeyError`` when ``key`` matches more than one value; ``filtering`` (which sees
    each match's path and value) can narrow the matches to one.

    Args:
        tree: the tree to search.
        key: the field, dict key or class name to look for.
        default: returned when nothing matches.
        filtering: ``filtering(path, value) -> bool`` keeps only the matches it accepts.

    Example:
        >>> import jax.numpy as jnp, gradtx, gradtx.tree
        >>> opt = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1)
        >>> state = opt.init(jnp.zeros(2))
        >>> gradtx.tree.get(state, "learning_rate")
        Array(0.1, dtype=float32)
        >>> gradtx.tree.get(state, "mu")
        Array([0., 0.], dtype=float32)
        >>> gradtx.tree.get(state, "nesterov", default="absent")
        'absent'
    """
    found = get_all_with_path(tree, key, filtering=filtering)
    if not found:
        return default
    if len(found) > 1:
        where_ = ", ".join(jax.tree_util.keystr(p) or "<root>" for p, _ in found)
        raise KeyError(
            f"get: {key!r} matches {len(found)} values (at {where_}); pass filtering=... to "
            "choose one, or use get_all_with_path"
        )
    return found[0][1]


def _all_names(tree: Any) -> list[str]:
    names: dict[str, None] = {}

    def walk(value: Any) -> None:
        node = _Node(value)
        if node.kind == "record":
            names[node.class_name] = None
        for n in node.names():
            names[str(n)] = None
        for _, child in node.entries:
            walk(child)

    walk(tree)
    return sorted(names)


def set(
    tree: Any,
    filtering: Callable[[KeyPath, Any], bool] | None = None,
    /,
    **kwargs: Any,
) -> Any:
    """A copy of ``tree`` with every value named by a keyword replaced by its value.

    What is named ``key`` is what :func:`get_all_with_path` finds (a record's field, a dict's
    entry, or a whole record by its class name), and every match is replaced; ``filtering``
    (which sees each match's path and value) restricts which. Raises ``KeyError`` when a
    keyword matches nothing.

    Args:
        tree: the tree to copy (an optimizer state, say).
        filtering: ``filtering(path, value) -> bool``: replace only the matches it accepts
            (positional).
        **kwargs: ``name=new_value`` pairs.

    Example:
        >>> import jax.numpy as jnp, gradtx, gradtx.tree
        >>> opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
        >>> state = opt.init(jnp.zeros(2))
        >>> state = gradtx.tree.set(state, learning_rate=jnp.asarray(0.5))
        >>> gradtx.tree.get(state, "learning_rate")
        Array(0.5, dtype=float32, weak_type=True)
    """
    for key in kwargs:
        if not get_all_with_path(tree, key, filtering):
            how = " that passes the filtering function" if filtering is not None else ""
            names = _all_names(tree)
            shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
            raise KeyError(f"set: no value named {key!r}{how} in the tree; names in it: {shown}")

    def accept(path: KeyPath, value: Any) -> bool:
        return filtering is None or bool(filtering(path, value))

    def replace(value: Any, path: KeyPath) -> Any:
        node = _Node(value)
        if node.kind == "record" and node.class_name in kwargs and accept(path, value):
            return kwargs[node.class_name]
        if not node.entries:
            return value
        own = node.kind in ("record", "dict")
        children, changed = [], False
        for entry, child in node.entries:
            child_path = (*path, entry)
            name = _entry_name(entry) if own else None
            if name is not None and _contains(list(kwargs), name) and accept(child_path, child):
                new = kwargs[name]
            else:
                new = replace(child, child_path)
            changed = changed or new is not child
            children.append(new)
        return node.rebuild(children) if changed else value

    return replace(tree, ())


# ----------------------------------------------------------------------------------------------
# Mapping over the parts of an optimizer state that mirror the parameters.


class _ParamsMark:
    """Stands for the part of the params at ``path`` while an ``init`` is traced by
    :func:`map_params`. It is a pytree node with no leaves, so whatever ``init`` builds from
    the params leaf by leaf (moments, accumulators) comes out as this mark again."""

    __slots__ = ("path",)

    def __init__(self, path: KeyPath):
        self.path = path

    def __repr__(self) -> str:
        return f"<params{jax.tree_util.keystr(self.path)}>"


jax.tree_util.register_pytree_node(
    _ParamsMark, lambda m: ((), m.path), lambda path, _: _ParamsMark(path)
)


def _is_mark(x: Any) -> bool:
    return isinstance(x, _ParamsMark)


def _holds_nothing(x: Any) -> bool:
    """An empty placeholder in a state (``None``, ``MaskedNode()``, ``()``, ``{}``)."""
    return x is None or (isinstance(x, tuple | list | dict) and len(x) == 0)


def _subtree(tree: Any, path: KeyPath) -> Any:
    """The part of ``tree`` at ``path``; ``tree`` itself when it has no such part (a tree
    already shaped like that part)."""
    out = tree
    for entry in path:
        children = dict(_one_level(out)[0])
        if entry not in children:
            return tree
        out = children[entry]
    return out


def _candidates(rest: tuple, is_leaf: Callable[[Any], bool] | None) -> list[tuple[str, Any]]:
    """Placeholder params to call ``init`` with, in the order they are tried.

    One mark for the whole params first (optax's way, so results agree with optax's wherever
    that works); then, when ``rest`` gives the params' structure, one mark per leaf of it (for
    an ``init`` that needs the structure, or a state that mirrors only part of the params, like
    lookahead's fast optimizer state).
    """
    out: list[tuple[str, Any]] = [("one mark for the whole params", _ParamsMark(()))]
    if rest:
        stop = (lambda x: x is None or is_leaf(x)) if is_leaf is not None else _is_none
        flat, treedef = jax.tree_util.tree_flatten_with_path(rest[0], is_leaf=stop)
        marks = [_ParamsMark(tuple(p)) for p, _ in flat]
        out.append(("one mark per leaf of the first extra tree", treedef.unflatten(marks)))
    return out


def map_params(
    initable: Any,
    f: Callable[..., Any],
    state: Any,
    /,
    *rest: Any,
    transform_non_params: Callable[..., Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Apply ``f`` to every part of an optimizer state that mirrors the parameters (moments,
    accumulators, ...), e.g. to build the state's sharding specs from the params' specs.

    Which parts mirror the params is found by calling ``initable``'s ``init`` on placeholder
    params: a pytree node with no leaves stands for the whole params, so every value ``init``
    derives leaf by leaf from the params comes out as that placeholder. Where ``init`` refuses
    it (it needs the params' structure), the first tree in ``rest`` gives the structure and a
    placeholder stands for each of its leaves (so ``rest`` shaped like ``lookahead``'s
    ``LookaheadParams`` maps its fast optimizer's state with the fast parts).

    On each part mirroring the params at path ``p``: ``jax.tree_util.tree_map(f, part,
    *[r at p for r in rest], is_leaf=is_leaf)`` (``r at p``: the part of ``r`` at ``p``, or
    ``r`` itself when the placeholder stands for the whole params). Parts holding nothing
    (``MaskedNode()`` of a masked-out parameter, ``None``) stay as they are unless ``is_leaf``
    picks them. Every other leaf ``v`` of the state becomes ``transform_non_params(v)`` (or
    stays as it is).

    Args:
        initable: a transform (anything with ``init(params)``) or a function ``init(params)``.
        f: the function applied to the leaves of every params-shaped part of ``state``.
        state: the optimizer state (or a tree with its structure).
        *rest: more trees with the params' structure (e.g. the params' sharding specs); their
            matching leaves are passed to ``f`` after the state's.
        transform_non_params: applied to every leaf that does not mirror the params (step
            counts, hyperparameters, ...).
        is_leaf: passed to the ``tree_map`` over each params-shaped part (e.g. to stop at
            ``MaskedNode``).

    Example:
        >>> import jax.numpy as jnp, gradtx, gradtx.tree
        >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
        >>> opt = gradtx.adam(1e-3)
        >>> state = opt.init(params)
        >>> specs = {"w": "rows", "b": "replicated"}
        >>> gradtx.tree.map_params(opt, lambda _, s: s, state, specs,
        ...                        transform_non_params=lambda _: None)
        (ScaleByAdamState(count=None, mu={'b': 'replicated', 'w': 'rows'},
                          nu={'b': 'replicated', 'w': 'rows'}), EmptyState())
    """
    if hasattr(initable, "init"):
        init = initable.init
    elif callable(initable):
        init = initable
    else:
        raise TypeError(
            "map_params: initable must be a transform with an init method or a function "
            f"init(params), got {type(initable).__name__}"
        )

    def given_leaf(x: Any) -> bool:
        return is_leaf is not None and bool(is_leaf(x))

    def stop(x: Any) -> bool:
        return given_leaf(x) or _holds_nothing(x)

    def fit(mark: Any, value: Any) -> None:  # the state and the rest trees fit the marks?
        if isinstance(mark, _ParamsMark):
            _tmap(lambda *_: None, value, *[_subtree(r, mark.path) for r in rest], is_leaf=stop)

    failures = []
    for what, placeholder in _candidates(rest, is_leaf):
        try:
            marked = init(placeholder)
            _tmap(fit, marked, state, is_leaf=_is_mark)
        except Exception as e:  # noqa: BLE001  (init refused this placeholder: try the next)
            failures.append(f"{what}: {type(e).__name__}: {e}")
            continue
        break
    else:
        hint = (
            ""
            if rest
            else "; pass a tree with the params' structure after state (e.g. their sharding "
            "specs) so the placeholders can mirror the params leaf by leaf"
        )
        raise ValueError(
            "map_params: could not find the parts of state that mirror the params; calling "
            "init with placeholder params failed or gave a state of another structure ("
            + " | ".join(failures)
            + ")"
            + hint
        )

    def apply(value: Any, *others: Any) -> Any:
        if _holds_nothing(value) and not given_leaf(value):
            return value  # a masked-out parameter: nothing to map
        return f(value, *others)

    def visit(mark: Any, value: Any) -> Any:
        if isinstance(mark, _ParamsMark):
            parts = [_subtree(r, mark.path) for r in rest]
            return _tmap(apply, value, *parts, is_leaf=stop)
        if transform_non_params is not None:
            return transform_non_params(value)
        return value

    return _tmap(visit, marked, state, is_leaf=_is_mark)
