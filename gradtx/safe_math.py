"""Numerically safe helpers with optax's names: norms floored with finite gradients, and step
counters that saturate instead of wrapping around."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

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
