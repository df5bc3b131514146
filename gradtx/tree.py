"""Tree math shared by every transform: moments, bias correction, norms, the step counter, dtypes.

Transforms call these instead of repeating the arithmetic, so a numerical fix lands in one place.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_none",
    "tree_map_none",
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
    "safe_increment",
    "abs_sq",
    "real_dtype",
    "compute_dtype",
    "check_structure",
    "first_difference",
]

_INT32_MAX = np.iinfo(np.int32).max


def is_none(x: Any) -> bool:
    """``x is None``: the ``is_leaf`` that keeps ``None`` placeholders (masked-out leaves)."""
    return x is None


def tree_map_none(f: Any, *trees: Any) -> Any:
    """``jax.tree_util.tree_map`` that hands ``None`` leaves to ``f`` instead of skipping them."""
    return jax.tree_util.tree_map(f, *trees, is_leaf=is_none)


_map = tree_map_none


def tree_zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Zeros shaped like each leaf, in ``dtype`` if given (else the leaf's dtype)."""
    return _map(lambda x: None if x is None else jnp.zeros(jnp.shape(x), dtype or _dtype(x)), tree)


def tree_full_like(tree: Any, value: Any, dtype: Any = None) -> Any:
    """``value`` broadcast to each leaf's shape, in ``dtype`` if given (else the leaf's)."""
    return _map(
        lambda x: None if x is None else jnp.full(jnp.shape(x), value, dtype or _dtype(x)), tree
    )


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
    return _map(lambda x: None if x is None else jnp.asarray(x).astype(dtype), tree)


def tree_cast_like(tree: Any, like: Any) -> Any:
    """Cast every leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return _map(lambda x, y: None if y is None else jnp.asarray(x).astype(_dtype(y)), tree, like)


def tree_add(a: Any, b: Any) -> Any:
    """Leaf-wise ``a + b``."""
    return _map(lambda x, y: None if x is None else x + y, a, b)


def tree_sub(a: Any, b: Any) -> Any:
    """Leaf-wise ``a - b``."""
    return _map(lambda x, y: None if x is None else x - y, a, b)


def tree_scale(s: Any, tree: Any) -> Any:
    """Leaf-wise ``s * x`` (``s`` a scalar), keeping each leaf's dtype."""
    return _map(lambda x: None if x is None else (s * x).astype(_dtype(x)), tree)


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
    if jnp.iscomplexobj(x):
        return jnp.real(x) ** 2 + jnp.imag(x) ** 2
    return x * x


def tree_l2_norm(tree: Any, squared: bool = False) -> jax.Array:
    """The 2-norm of all leaves taken together (``||vec(tree)||``), accumulated in >= float32."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.zeros(())
    sq = sum(jnp.sum(abs_sq(jnp.asarray(x).astype(compute_dtype(_dtype(x))))) for x in leaves)
    return sq if squared else jnp.sqrt(sq)


def global_norm(updates: Any) -> jax.Array:
    """The global norm ``sqrt(sum_i ||u_i||^2)`` over every parameter."""
    return tree_l2_norm(updates)


def update_moment(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Exponential moving average of ``g ** order``: ``m ← decay·m + (1 − decay)·g^order``.

    The result keeps each moment's dtype (so ``mu_dtype`` state stays in its dtype).
    """

    def f(g, m):
        if g is None:
            return None
        gm = g.astype(m.dtype) if order == 1 else g
        val = (1 - decay) * (gm**order) + decay * m
        return val.astype(m.dtype)

    return _map(f, updates, moments)


def update_moment_per_elem_norm(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Exponential moving average of ``|g| ** order`` (real-valued for complex ``g``).

    For ``order == 2`` this is the second moment ``v ← decay·v + (1 − decay)·|g|^2``.
    """

    def f(g, m):
        if g is None:
            return None
        if order == 2:
            p = abs_sq(g)
        else:
            p = jnp.abs(g) ** order
        return ((1 - decay) * p.astype(m.dtype) + decay * m).astype(m.dtype)

    return _map(f, updates, moments)


def bias_correction(moment: Any, decay: Any, count: jax.Array) -> Any:
    """Adam's bias correction ``m̂ = m / (1 − decay^t)`` with ``t = count`` (count >= 1)."""

    def f(m):
        if m is None:
            return None
        cd = compute_dtype(m.dtype)
        corr = 1 - jnp.asarray(decay, dtype=real_dtype(cd)) ** count.astype(real_dtype(cd))
        return (m.astype(cd) / corr).astype(cd)

    return _map(f, moment)


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


def first_difference(a: Any, b: Any) -> tuple[str, str] | None:
    """The key path (and what differs) of the first leaf where two trees' structure or shapes
    differ, or ``None`` when they match."""
    is_leaf = lambda x: x is None  # noqa: E731
    la, ta = jax.tree_util.tree_flatten_with_path(a, is_leaf=is_leaf)
    lb, tb = jax.tree_util.tree_flatten_with_path(b, is_leaf=is_leaf)
    pa = [jax.tree_util.keystr(p) for p, _ in la]
    pb = [jax.tree_util.keystr(p) for p, _ in lb]
    for i, (x, y) in enumerate(zip(pa, pb, strict=False)):
        if x != y:
            return (x if x < y else y, "present in only one of them")
        if la[i][1] is None or lb[i][1] is None:
            continue
        sa, sb = jnp.shape(la[i][1]), jnp.shape(lb[i][1])
        if sa != sb:
            return (x, f"shape {sa} vs {sb}")
    if len(pa) != len(pb):
        longer = pa if len(pa) > len(pb) else pb
        return (longer[min(len(pa), len(pb))], "present in only one of them")
    if ta != tb:
        return ("", f"tree structure {ta} vs {tb}")
    return None


def check_structure(updates: Any, reference: Any, owner: str, what: str, ref_name: str) -> None:
    """Raise ``ValueError`` naming the first path where ``updates`` and ``reference`` differ.

    This runs at trace time (structures and shapes are static), so it costs nothing in a jitted
    step.
    """
    if reference is None:
        return
    diff = first_difference(updates, reference)
    if diff is not None:
        path, why = diff
        where = path if path else "the root"
        raise ValueError(
            f"{owner}: the structure of {what} differs from the {ref_name} at {where} ({why})"
        )
