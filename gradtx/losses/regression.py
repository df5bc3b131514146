"""Regression losses: squared, Huber and log-cosh errors, cosine similarity and distance.

Every loss here is returned unreduced (element-wise, or per vector for the cosine measures), so
``squared_error(p, t).mean()`` is the mean squared error. Half-precision inputs (bfloat16,
float16) are computed in float32 and the result is cast back to the input dtype.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx.core import check_range, eager_jit
from gradtx.numerics import cast, compute_dtype

__all__ = [
    "squared_error",
    "l2_loss",
    "huber_loss",
    "log_cosh",
    "cosine_similarity",
    "cosine_distance",
]

_Axis = int | tuple[int, ...] | None

# log_cosh switches from log1p(2 sinh²(x/2)) (accurate near 0) to |x| + log1p(e^{-2|x|}) - log 2
# (no overflow) here; both are accurate to a few ulps on either side of it.
_LOG_COSH_SWITCH = 1.0


# ----------------------------------------------------------------------------------------------
# Shared input handling for the loss modules (private).


def _floating(fn: str, name: str, x: ArrayLike) -> jax.Array:
    """``x`` as a JAX array, raising ``TypeError`` naming ``fn`` unless it is real floating."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must be a real floating-point array, got dtype {x.dtype}")
    return x


def _check_same_shape(fn: str, name: str, x: jax.Array, like_name: str, like: jax.Array) -> None:
    if x.shape != like.shape:
        raise ValueError(
            f"{fn}: {name} must have the shape of {like_name} {like.shape}, got {x.shape}"
        )


def _check_broadcast(fn: str, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The common broadcast shape, or ``ValueError`` naming ``fn`` and every shape."""
    try:
        return jnp.broadcast_shapes(*shapes.values())
    except ValueError:
        listed = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise ValueError(f"{fn}: shapes do not broadcast together: {listed}") from None


def _compiled(*static: str) -> Callable[[Callable], Callable]:
    """Run a loss's arithmetic as one compiled function (cached by shapes, dtypes and the
    ``static`` arguments) rather than op by op; inside a trace it is inlined as usual. Input
    checks stay outside, on the concrete values. ``gradtx.eager_jit(False)`` turns it off."""

    def wrap(core: Callable) -> Callable:
        jitted = jax.jit(core, static_argnames=static)

        @functools.wraps(core)
        def call(*args, **kwargs):
            return (jitted if eager_jit.enabled() else core)(*args, **kwargs)

        return call

    return wrap


def _check_errors(
    fn: str, predictions: ArrayLike, targets: ArrayLike | None, *, same_shape: bool
) -> tuple[jax.Array, jax.Array | None]:
    """``predictions`` and ``targets`` as arrays, after checking dtype and shapes."""
    p = _floating(fn, "predictions", predictions)
    if targets is None:
        return p, None
    t = jnp.asarray(targets)
    if same_shape:
        _check_same_shape(fn, "targets", t, "predictions", p)
    else:
        _check_broadcast(fn, {"predictions": p.shape, "targets": t.shape})
    return p, t


def _static_axis(axis: _Axis) -> _Axis:
    """``axis`` in a hashable form (a list becomes a tuple), for a static argument."""
    return tuple(axis) if isinstance(axis, list) else axis


def _errors(p: jax.Array, t: jax.Array | None, *extra: ArrayLike) -> tuple[jax.Array, jnp.dtype]:
    """``p − t`` in the compute dtype, and the dtype to return the loss in."""
    dtype = jnp.result_type(p, *extra) if t is None else jnp.result_type(p, t, *extra)
    ct = compute_dtype(dtype)
    return (cast(p, ct) if t is None else cast(p, ct) - cast(t, ct)), dtype


# ----------------------------------------------------------------------------------------------
# Element-wise losses.


def squared_error(predictions: ArrayLike, targets: ArrayLike | None = None) -> jax.Array:
    """Squared error, element-wise: ``(p − t)²``.

    The mean squared error is ``squared_error(p, t).mean()``; :func:`l2_loss` is half of it.

    Args:
        predictions: real floating array of any shape.
        targets: array of the same shape as ``predictions``; zeros when omitted.

    Returns:
        The squared differences, shaped like ``predictions``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.regression import squared_error
        >>> squared_error(jnp.array([1.0, 2.0, -1.0]), jnp.array([0.0, 2.5, 1.0])).tolist()
        [1.0, 0.25, 4.0]
    """
    return _squared(*_check_errors("squared_error", predictions, targets, same_shape=True), 1.0)


@_compiled()
def _squared(p, t, factor):
    e, dtype = _errors(p, t)
    return cast(factor * (e * e), dtype)


def l2_loss(predictions: ArrayLike, targets: ArrayLike | None = None) -> jax.Array:
    """Half the squared error, element-wise: ``½ (p − t)²``.

    The factor ½ makes the gradient ``p − t`` (the convention of Bishop, "Pattern Recognition
    and Machine Learning", 2006). Otherwise as :func:`squared_error`.

    Args:
        predictions: real floating array of any shape.
        targets: array of the same shape as ``predictions``; zeros when omitted.

    Returns:
        ``½ (p − t)²``, shaped like ``predictions``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.regression import l2_loss
        >>> l2_loss(jnp.array([1.0, 2.0, -1.0]), jnp.array([0.0, 2.5, 1.0])).tolist()
        [0.5, 0.125, 2.0]
    """
    return _squared(*_check_errors("l2_loss", predictions, targets, same_shape=True), 0.5)


def huber_loss(
    predictions: ArrayLike, targets: ArrayLike | None = None, *, delta: ArrayLike = 1.0
) -> jax.Array:
    """Huber loss, element-wise: quadratic for small errors, linear for large ones.

    With ``e = p − t``::

        huber(e) = ½ e²               if |e| ≤ δ
                   δ (|e| − ½ δ)      otherwise

    Its gradient is ``e`` clipped to ``[−δ, δ]``, so gradient descent on it is gradient descent
    on :func:`l2_loss` with the error clipped in the backward pass.

    Args:
        predictions: real floating array of any shape.
        targets: array broadcastable with ``predictions``; zeros when omitted.
        delta: where the loss turns from quadratic to linear, ``δ > 0`` (a scalar or an array
            broadcastable with the errors).

    Returns:
        The Huber loss of each error, in the broadcast shape of the inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.regression import huber_loss
        >>> huber_loss(jnp.array([0.5, -3.0]), delta=1.0).tolist()
        [0.125, 2.5]

    Reference: Huber, "Robust Estimation of a Location Parameter", Annals of Mathematical
    Statistics, 1964.
    """
    check_range("huber_loss", "delta", delta, low=0.0, low_open=True)
    p, t = _check_errors("huber_loss", predictions, targets, same_shape=False)
    return _huber(p, t, jnp.asarray(delta))  # a Python number stays weakly typed


@_compiled()
def _huber(p, t, delta):
    e, dtype = _errors(p, t, delta)
    d = cast(delta, e.dtype)
    a = jnp.abs(e)
    inner = jnp.minimum(a, d)  # the part of |e| inside [0, δ] is charged quadratically ...
    outer = a - inner  # ... the rest linearly, with slope δ
    return cast(0.5 * (inner * inner) + d * outer, dtype)


def log_cosh(predictions: ArrayLike, targets: ArrayLike | None = None) -> jax.Array:
    """Log-cosh loss, element-wise: ``log(cosh(p − t))``.

    It behaves like ``e²/2`` for small errors and like ``|e| − log 2`` for large ones: a
    smooth (twice differentiable) relative of :func:`huber_loss`, with gradient ``tanh(e)``.
    Computed as ``log1p(2 sinh²(e/2))`` for ``|e| < 1`` (accurate to the last bits near zero)
    and ``|e| + log1p(exp(−2|e|)) − log 2`` beyond (no overflow for any finite error).

    Args:
        predictions: real floating array of any shape.
        targets: array broadcastable with ``predictions``; zeros when omitted.

    Returns:
        The log-cosh loss of each error, in the broadcast shape of the inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.regression import log_cosh
        >>> [round(float(v), 4) for v in log_cosh(jnp.array([0.0, 1.0, 1e4]))]
        [0.0, 0.4338, 9999.3066]

    Reference: Chen et al., "Log Hyperbolic Cosine Loss Improves Variational Auto-Encoder",
    2019, https://openreview.net/forum?id=rkglvsC9Ym.
    """
    return _log_cosh(*_check_errors("log_cosh", predictions, targets, same_shape=False))


@_compiled()
def _log_cosh(p, t):
    e, dtype = _errors(p, t)
    a = jnp.abs(e)
    small = a < _LOG_COSH_SWITCH
    # Each branch only sees inputs in its own range, so neither overflows nor yields a NaN
    # gradient where it is not selected.
    a_small = jnp.where(small, a, 0.0)
    a_large = jnp.where(small, _LOG_COSH_SWITCH, a)
    near = jnp.log1p(2.0 * jnp.square(jnp.sinh(0.5 * a_small)))
    far = a_large + jnp.log1p(jnp.exp(-2.0 * a_large)) - math.log(2.0)
    return cast(jnp.where(small, near, far), dtype)


# ----------------------------------------------------------------------------------------------
# Cosine measures.


def _check_cosine(fn: str, predictions, targets, epsilon, where):
    check_range(fn, "epsilon", epsilon, low=0.0)
    p = _floating(fn, "predictions", predictions)
    t = _floating(fn, "targets", targets)
    shapes = {"predictions": p.shape, "targets": t.shape}
    if where is not None:
        where = jnp.asarray(where, dtype=bool)
        shapes["where"] = where.shape
    _check_broadcast(fn, shapes)
    return p, t, epsilon, where


@_compiled("axis", "distance")
def _cosine(p, t, epsilon, where, axis: _Axis, distance: bool) -> jax.Array:
    """Cosine similarity (or ``1 −`` it), computed in the compute dtype."""
    shape = jnp.broadcast_shapes(p.shape, t.shape, *([] if where is None else [where.shape]))
    dtype = jnp.result_type(p, t)
    ct = compute_dtype(dtype)
    p = jnp.broadcast_to(cast(p, ct), shape)
    t = jnp.broadcast_to(cast(t, ct), shape)
    eps = cast(epsilon, ct)

    def unit(x):
        sq = jnp.maximum(jnp.sum(x * x, axis=axis, where=where, keepdims=True), eps)
        # A zero vector (with epsilon = 0) is left as zero rather than turned into 0/0.
        sq = jnp.where(sq > 0, sq, 1.0)
        return x / jnp.sqrt(sq)

    sim = jnp.sum(unit(p) * unit(t), axis=axis, where=where)
    return cast(1.0 - sim if distance else sim, dtype)


def cosine_similarity(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    epsilon: ArrayLike = 0.0,
    axis: _Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Cosine similarity along ``axis``: the cosine of the angle between ``p`` and ``t``.

    ``cos(p, t) = ⟨p, t⟩ / (sqrt(max(‖p‖², ε)) · sqrt(max(‖t‖², ε)))``, with the inner product
    and norms taken over ``axis`` and over the elements where ``where`` is true. ``ε`` keeps
    near-zero vectors from dividing by almost nothing; a vector that is exactly zero (with
    ``ε = 0``) has similarity 0 to everything.

    Args:
        predictions: real floating array ``[..., dim]``.
        targets: real floating array broadcastable with ``predictions``.
        epsilon: lower bound on each squared norm, ``≥ 0``.
        axis: axis or axes holding the vectors (``None``: all of them).
        where: boolean mask broadcastable with the inputs; only its true elements count.

    Returns:
        The similarity of each pair of vectors: the inputs' shape without ``axis``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.regression import cosine_similarity
        >>> p = jnp.array([[1.0, 0.0], [1.0, 1.0]])
        >>> t = jnp.array([[0.0, 2.0], [3.0, 3.0]])
        >>> [round(float(v), 4) for v in cosine_similarity(p, t)]
        [0.0, 1.0]

    Reference: https://en.wikipedia.org/wiki/Cosine_similarity
    """
    args = _check_cosine("cosine_similarity", predictions, targets, epsilon, where)
    return _cosine(*args, axis=_static_axis(axis), distance=False)


def cosine_distance(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    epsilon: ArrayLike = 0.0,
    axis: _Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Cosine distance along ``axis``: ``1 − cos(p, t)``, in ``[0, 2]``.

    See :func:`cosine_similarity` for ``cos``, ``epsilon``, ``axis`` and ``where``.

    Args:
        predictions: real floating array ``[..., dim]``.
        targets: real floating array broadcastable with ``predictions``.
        epsilon: lower bound on each squared norm, ``≥ 0``.
        axis: axis or axes holding the vectors (``None``: all of them).
        where: boolean mask broadcastable with the inputs; only its true elements count.

    Returns:
        The distance of each pair of vectors: the inputs' shape without ``axis``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.regression import cosine_distance
        >>> p = jnp.array([[1.0, 0.0], [1.0, 1.0]])
        >>> t = jnp.array([[-2.0, 0.0], [3.0, 3.0]])
        >>> [round(float(v), 4) for v in cosine_distance(p, t)]
        [2.0, 0.0]

    Reference: https://en.wikipedia.org/wiki/Cosine_similarity#Cosine_distance
    """
    args = _check_cosine("cosine_distance", predictions, targets, epsilon, where)
    return _cosine(*args, axis=_static_axis(axis), distance=True)
