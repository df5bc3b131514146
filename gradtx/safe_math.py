"""Numerically safe helpers with optax's names: norms floored with finite gradients, and step
counters that saturate instead of wrapping around.

Also gradtx's own (private) guards against overflow, used by the transforms:

- :func:`_saturate`: squared moments and accumulated squared norms held in a state stop at the
  largest finite value of their dtype instead of overflowing to ``inf`` (float32 squares
  overflow above ``|g| ≈ 1.8e19``, float16 above 256);
- :func:`_global_norm`, :func:`_roots`: norms computed each step that stay correct at any
  finite scale. The plain ``sqrt(Σ |x|²)`` is returned, bit for bit, when its sum of squares is
  a normal float; otherwise (overflow to ``inf``, or underflow below the smallest normal) a
  ``lax.cond`` recomputes it as ``m · sqrt(Σ |x/m|²)`` with ``m = max |x|``, so the common case
  costs one scalar predicate.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import numerics

__all__ = ["safe_norm", "safe_root_mean_squares", "safe_increment", "safe_int32_increment"]


def _floored(
    value_fn: Any, x: jax.Array, floor: Any, reduced: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``value_fn`` of ``x`` with the floored entries replaced by ones, and where the floor is
    taken (``reduced <= floor``, ``reduced`` being ``value_fn(x)`` broadcastable against ``x``).

    Replacing them keeps the derivative of ``value_fn`` finite there (it never meets
    ``sqrt(0)``); the caller returns the floor itself at those places.
    """
    below = reduced <= floor
    masked = value_fn(jnp.where(below, jnp.ones_like(x), x))
    return masked, below


def safe_norm(
    x: Any,
    min_norm: Any,
    ord: int | float | str | None = None,  # numpy's and optax's name
    axis: None | tuple[int, ...] | int = None,
    keepdims: bool = False,
) -> jax.Array:
    """``max(‖x‖, n_min)`` with a gradient that is 0, not NaN, where the floor is taken.

    ``jnp.maximum(jnp.linalg.norm(x), n_min)`` has a NaN gradient at ``x = 0`` (JAX
    differentiates both branches, and the norm's derivative ``x / ‖x‖`` is ``0 / 0`` there).
    Here the norm is taken of ``x`` with the floored entries replaced by ones, so both branches
    have finite derivatives:

    .. math::
        \\operatorname{safe\\_norm}(x) = \\begin{cases} n_{\\min} & \\lVert x\\rVert \\le n_{\\min}
        \\\\ \\lVert x\\rVert & \\text{otherwise,}\\end{cases}\\qquad
        \\nabla = \\begin{cases} 0 \\\\ \\nabla \\lVert x\\rVert. \\end{cases}

    Args:
        x: an array.
        min_norm: the floor ``n_min``.
        ord: the order of the norm, as for ``jnp.linalg.norm`` (``None``: 2-norm of a vector,
            Frobenius norm of a matrix; ``inf``, ``-inf``, ints, ``'fro'``, ``'nuc'``).
        axis: the axis (vector norms) or pair of axes (matrix norms) to reduce; ``None`` as
            for ``jnp.linalg.norm``.
        keepdims: keep the reduced axes as size-1 dimensions.

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> float(gradtx.safe_norm(jnp.array([3.0, 4.0]), 1.0))
        5.0
        >>> jax.grad(lambda x: gradtx.safe_norm(x, 1e-6))(jnp.zeros(2)).tolist()
        [0.0, 0.0]
    """
    x = jnp.asarray(x)
    norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    masked, below = _floored(
        lambda y: jnp.linalg.norm(y, ord=ord, axis=axis, keepdims=keepdims), x, min_norm, norm
    )
    if not keepdims:
        below = jnp.squeeze(below, axis=axis)
    return jnp.where(below, min_norm, masked)


def safe_root_mean_squares(x: Any, min_rms: Any) -> jax.Array:
    """``max(sqrt(mean |x|²), r_min)`` with a gradient that is 0, not NaN, where the floor is
    taken (the reasoning of :func:`safe_norm`, for the root mean square of all of ``x``).

    Args:
        x: an array (real or complex).
        min_rms: the floor ``r_min``.

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> float(gradtx.safe_root_mean_squares(jnp.array([3.0, -3.0]), 0.1))
        3.0
        >>> jax.grad(lambda x: gradtx.safe_root_mean_squares(x, 0.1))(jnp.zeros(2)).tolist()
        [0.0, 0.0]
    """
    x = jnp.asarray(x)

    def rms(y):
        return jnp.sqrt(jnp.mean(numerics.abs_sq(y)))

    masked, below = _floored(rms, x, min_rms, rms(x))
    return jnp.where(below, min_rms, masked)


def safe_increment(count: Any) -> Any:
    """``count + 1``, saturating at the largest value of ``count``'s dtype instead of
    overflowing (an int32 step counter stays at ``2**31 − 1``, never wraps to negative).

    Args:
        count: an integer or floating counter (a scalar or array).

    Raises:
        ValueError: when ``count``'s dtype is neither integer nor floating (e.g. bool).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> gradtx.safe_increment(jnp.asarray(1, jnp.int32)).tolist()
        2
        >>> gradtx.safe_increment(jnp.asarray(2**31 - 1, jnp.int32)).tolist()
        2147483647
    """
    count = jnp.asarray(count)
    dtype = count.dtype
    if dtype == jnp.int32:
        return numerics.safe_increment(count)  # gradtx's step counter
    if jnp.issubdtype(dtype, jnp.integer):
        top = jnp.iinfo(dtype).max
    elif jnp.issubdtype(dtype, jnp.floating):
        top = jnp.finfo(dtype).max
    else:
        raise ValueError(
            f"safe_increment: count must have an integer or floating dtype, got {dtype}"
        )
    top = jnp.asarray(top, dtype)
    return jnp.where(count < top, count + jnp.asarray(1, dtype), top)


safe_int32_increment = safe_increment  # optax's older name


# ----------------------------------------------------------------------------------------------
# Overflow guards used by the transforms (private: gradtx's own plumbing).


def _saturate(x: Any) -> Any:
    """``min(x, finfo(dtype).max)``: an overflowed square (``+inf``) becomes the largest finite
    value of ``x``'s dtype. Finite values are returned unchanged, bit for bit; NaN stays NaN.

    ``None`` (a masked-out leaf) is returned as it is. Applied in the dtype the value is stored
    in, after any cast, so a float16 moment stops at 65504.
    """
    if x is None:
        return None
    x = x if isinstance(x, jax.Array) else jnp.asarray(x)
    # A select rather than ``lax.min``: XLA:CPU duplicates a ``minimum`` into every consumer of
    # the new moment and copies the donated buffer (Adam on 16M floats ran 2.8x slower); the
    # select fuses like the plain update.
    return jnp.where(x == jnp.inf, np.asarray(jnp.finfo(x.dtype).max, x.dtype), x)


def _saturate_tree(tree: Any) -> Any:
    """:func:`_saturate` on every leaf (``None`` leaves kept)."""
    return numerics.tree_map_none(_saturate, tree)


def _is_normal(sq: jax.Array) -> jax.Array:
    """Whether ``sq`` (a sum or mean of squares) is a normal float: neither ``inf``/NaN
    (overflow) nor below the smallest normal number (underflow, flushed to zero on most
    backends). Zero counts as not normal: it may be an underflow of non-zero entries."""
    info = jnp.finfo(sq.dtype)
    return (sq >= np.asarray(info.tiny, sq.dtype)) & (sq <= np.asarray(info.max, sq.dtype))


def _sqrt_normal(sq: jax.Array) -> jax.Array:
    """``sqrt(sq)`` where ``sq`` is normal, 1 elsewhere (for ``where(normal, this, ...)``: the
    square root of 0 would give a NaN gradient through the branch not taken)."""
    return jnp.sqrt(jnp.where(_is_normal(sq), sq, jnp.ones_like(sq)))


def _cond(pred: Any, true_fn: Any, false_fn: Any, *operands: Any) -> Any:
    """``lax.cond`` on a traced predicate; the branch itself on a concrete one (op by op, a
    ``lax.cond`` would compile its branches anew on every call)."""
    if isinstance(pred, jax.core.Tracer):
        return lax.cond(pred, true_fn, false_fn, *operands)
    return true_fn(*operands) if bool(pred) else false_fn(*operands)


def _all(preds: Sequence[jax.Array]) -> jax.Array:
    """Logical and of boolean arrays of any shapes, as a scalar."""
    return functools.reduce(operator.and_, [jnp.all(p) for p in preds])


def _scaled_root(
    x: jax.Array, sq: jax.Array, axis: Any = None, keepdims: bool = False, mean: bool = False
) -> jax.Array:
    """``sqrt(reduce |x|²)`` (``reduce`` a sum, or a mean with ``mean=True``, over ``axis``)
    computed as ``m · sqrt(reduce |x/m|²)`` with ``m = max |x|`` over the same axes, which
    neither overflows nor underflows.

    ``sq`` is the plain reduction (shaped as the result): where ``m`` is ``inf`` or NaN the
    answer is its square root (``inf`` or NaN, as the plain computation says), and where ``m``
    is 0 it is 0. ``x`` is already in the dtype to accumulate in. The scaling is by powers of
    two (exact), see :func:`_scales`.
    """
    if x.size == 0:
        return jnp.sqrt(sq)
    m = jnp.max(jnp.abs(x), axis=axis, keepdims=True).astype(sq.dtype)
    usable = (m > 0) & jnp.isfinite(m)
    down, up = _scales(m, usable)
    y = numerics.abs_sq(_times(x, down))
    s = jnp.mean(y, axis=axis, keepdims=True) if mean else jnp.sum(y, axis=axis, keepdims=True)
    # s >= 1/4 where usable (the largest entry contributes it): sqrt never meets 0
    root = _times(jnp.sqrt(jnp.where(usable, s, jnp.ones_like(s))), up)
    if not keepdims:
        root, usable, m = (
            jnp.squeeze(v, axis=axis) if axis is not None else jnp.reshape(v, ())
            for v in (root, usable, m)
        )
    return _pick(usable, root, m, sq)


def _scales(m: jax.Array, usable: jax.Array) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Powers of two that bring ``m`` (> 0, finite where ``usable``) into ``[1/2, 1)`` and back:
    ``m · down = f`` and ``f · up = m``, each as two factors that are normal numbers.

    Dividing by ``m`` itself is not safe: XLA may turn ``x / m`` into ``x · (1/m)``, and for
    ``m`` above ``1/tiny`` (8.5e37 in float32) that reciprocal flushes to zero. Multiplying by
    powers of two is exact. The exponents are constants to autodiff (``m·‖x/m‖`` is ``‖x‖``
    whatever ``m`` is), so gradients are those of the norm.
    """
    _, e = jnp.frexp(jnp.where(usable, m, jnp.ones_like(m)))  # m = f · 2^e, f in [1/2, 1)
    e = lax.stop_gradient(e)
    one = jnp.ones_like(m)

    def pow2(n):  # 2^n as two halves, each within the normal range
        h = n // 2
        return jnp.ldexp(one, h), jnp.ldexp(one, n - h)

    return pow2(-e), pow2(e)


def _times(x: jax.Array, factors: tuple[Any, Any]) -> jax.Array:
    """``x`` times both factors (real powers of two, broadcast against ``x``)."""
    a, b = factors
    return x * a.astype(numerics.real_dtype(x.dtype)) * b.astype(numerics.real_dtype(x.dtype))


def _pick(usable: jax.Array, root: jax.Array, m: jax.Array, sq: jax.Array) -> jax.Array:
    """The scaled ``root`` where the scale ``m`` was usable; else 0 where ``m == 0`` (all zeros)
    and ``sqrt(sq)`` where ``m`` is ``inf`` or NaN (the plain answer, ``inf`` or NaN). No
    square root of 0 is taken, so the gradient at zero is 0, not NaN."""
    zero = m == 0
    plain = jnp.sqrt(jnp.where(usable | zero, jnp.ones_like(sq), sq))
    return jnp.where(usable, root, jnp.where(zero, jnp.zeros_like(sq), plain))


def _roots(
    xs: Sequence[jax.Array],
    sqs: Sequence[jax.Array],
    axes: Sequence[Any] | None = None,
    keepdims: bool = False,
    mean: bool = False,
) -> list[jax.Array]:
    """``sqrt(sq)`` for each plain reduction ``sq`` of ``|x|²`` (as the caller computed it,
    over all axes of ``x``, or over ``axes[i]`` for ``xs[i]``), or, where one over- or
    underflowed, the scaled computation of :func:`_scaled_root`.

    One ``lax.cond`` decides for all of them: when every ``sq`` is a normal float the result is
    ``[sqrt(sq) ...]`` bit for bit, and nothing else runs.
    """
    xs, sqs = list(xs), list(sqs)
    if not xs:
        return []
    axes = [None] * len(xs) if axes is None else list(axes)

    def plain(sqs):
        return [jnp.sqrt(sq) for sq in sqs]

    def rescaled(sqs):
        return [
            jnp.where(_is_normal(sq), _sqrt_normal(sq), _scaled_root(x, sq, axis, keepdims, mean))
            for x, sq, axis in zip(xs, sqs, axes, strict=True)
        ]

    return _cond(_all([_is_normal(sq) for sq in sqs]), plain, rescaled, sqs)


def _global_norm(tree: Any) -> jax.Array:
    """``sqrt(Σ_i ‖x_i‖²)`` over every leaf, equal bit for bit to
    :func:`gradtx.numerics.global_norm` when the sum of squares is a normal float, and
    correct at any finite scale otherwise (see :func:`_roots`; one ``lax.cond``)."""
    return _global_norms(tree)[0]


def _global_norms(*trees: Any) -> list[jax.Array]:
    """:func:`_global_norm` of each tree, with one ``lax.cond`` for all of them."""
    leaves = [[x for x in jax.tree_util.tree_leaves(t) if x is not None] for t in trees]
    sqs = [numerics.tree_l2_norm(ls, squared=True) for ls in leaves]

    def plain(sqs):
        return [jnp.sqrt(sq) for sq in sqs]

    def rescaled(sqs):
        return [
            jnp.where(_is_normal(sq), _sqrt_normal(sq), _scaled_global(ls, sq))
            for ls, sq in zip(leaves, sqs, strict=True)
        ]

    return _cond(_all([_is_normal(sq) for sq in sqs]), plain, rescaled, sqs)


def _scaled_global(leaves: list[Any], sq: jax.Array) -> jax.Array:
    """``‖vec(leaves)‖`` as ``m ‖vec(leaves)/m‖`` with ``m`` the largest ``|x|`` of them all;
    ``sq`` is the plain sum of squares (see :func:`_pick`).

    The magnitudes of all leaves are joined into one vector first, so this rarely taken branch
    adds three reductions to the program whatever the number of leaves (one per leaf doubled
    the XLA compile time of ``clip_by_global_norm`` on 1,000 leaves).
    """
    xs = [numerics.as_array(x) for x in leaves]
    xs = [x for x in xs if x.size]
    if not xs:
        return jnp.sqrt(sq)
    groups: dict[Any, list[jax.Array]] = {}  # one vector per dtype: a reshape per leaf, no more
    split = []  # sharded in their type (an Explicit mesh axis): kept whole, not raveled
    for x in xs:
        if _split_in_type(x):
            split.append(x)
        else:
            groups.setdefault(x.dtype, []).append(jnp.ravel(x))
    parts = [jnp.concatenate(g) for g in groups.values()] + split
    mags = [jnp.abs(numerics.cast(x, _wide(x, sq.dtype))).astype(sq.dtype) for x in parts]
    if len(groups) > 1 and not split:
        mags = [jnp.concatenate(mags)]
    m = functools.reduce(jnp.maximum, [jnp.max(x) for x in mags])
    usable = (m > 0) & jnp.isfinite(m)
    down, up = _scales(m, usable)
    s = sum(jnp.sum(jnp.square(_times(x, down))) for x in mags)
    root = _times(jnp.sqrt(jnp.where(usable, s, jnp.ones_like(s))), up)
    return _pick(usable, root, m, sq)


def _split_in_type(x: jax.Array) -> bool:
    """Whether ``x`` is sharded in its type (over an Explicit mesh axis), so that raveling it
    would need an output sharding; such leaves are reduced whole instead."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    return bool(spec) and any(a is not None for a in spec)


def _wide(x: jax.Array, real: Any) -> Any:
    """The dtype to scale ``x`` in: ``real`` (the norm's dtype), complex when ``x`` is."""
    return jnp.promote_types(real, x.dtype) if jnp.iscomplexobj(x) else real
