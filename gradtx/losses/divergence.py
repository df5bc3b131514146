"""Divergences between probability distributions: Kullback–Leibler and its generalisation to
unnormalised measures.

Predictions are given as log-probabilities (so tiny probabilities do not underflow), targets as
probabilities or, for :func:`kl_divergence_with_log_targets`, log-probabilities. Terms with a
zero target count as zero (the convention ``0 · log 0 = 0``), in the value and in the gradient.
Half-precision inputs are computed in float32 and the result is cast back.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx.losses.regression import _Axis, _check_broadcast, _compiled, _floating, _static_axis
from gradtx.numerics import cast, compute_dtype

__all__ = [
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "generalized_kl_divergence",
    "convex_kl_divergence",
]


def _inputs(fn: str, log_predictions, targets, targets_name: str, where):
    """The inputs as arrays, after checking dtypes and shapes."""
    lp = _floating(fn, "log_predictions", log_predictions)
    t = _floating(fn, targets_name, targets)
    shapes = {"log_predictions": lp.shape, targets_name: t.shape}
    if where is not None:
        where = jnp.asarray(where, dtype=bool)
        shapes["where"] = where.shape
    _check_broadcast(fn, shapes)
    return lp, t, where


@_compiled("kind", "axis")
def _divergence(lp, t, where, kind: str, axis: _Axis) -> jax.Array:
    """Sum over ``axis`` (and ``where``) of the element-wise terms of divergence ``kind``."""
    shape = jnp.broadcast_shapes(lp.shape, t.shape, *([] if where is None else [where.shape]))
    dtype = jnp.result_type(lp, t)
    ct = compute_dtype(dtype)
    lp = jnp.broadcast_to(cast(lp, ct), shape)
    t = jnp.broadcast_to(cast(t, ct), shape)
    if kind == "kl":
        terms = _kl_terms(lp, t)
    elif kind == "generalized":
        terms = _kl_terms(lp, t) + (jnp.exp(lp) - t)
    else:  # "log_targets": t holds log t; log t = -inf is a zero term
        zero = jnp.isneginf(t)
        safe_lt = jnp.where(zero, 0.0, t)
        safe_lp = jnp.where(zero, 0.0, lp)
        terms = jnp.where(zero, 0.0, jnp.exp(safe_lt) * (safe_lt - safe_lp))
    return cast(jnp.sum(terms, axis=axis, where=where), dtype)


def _kl_terms(lp: jax.Array, t: jax.Array) -> jax.Array:
    """``t · (log t − lp)`` element-wise, exactly 0 (with finite gradients) where ``t = 0``."""
    zero = t == 0
    safe_t = jnp.where(zero, 1.0, t)
    safe_lp = jnp.where(zero, 0.0, lp)
    return jnp.where(zero, 0.0, safe_t * (jnp.log(safe_t) - safe_lp))


def kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: _Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Kullback–Leibler divergence ``KL(t ‖ p)`` of the predictions from the targets.

    ``KL(t ‖ p) = Σ_i t_i (log t_i − log p_i)``, summed over ``axis`` and over the elements where
    ``where`` is true, with ``0 · log 0 = 0``. It is the expected extra information needed to
    encode samples of ``t`` with a code optimised for ``p``; it is ``≥ 0`` for distributions and
    ``0`` only when they agree.

    Args:
        log_predictions: log-probabilities ``log p``, ``[..., dim]``.
        targets: probabilities ``t ≥ 0``, broadcastable with ``log_predictions``.
        axis: axis or axes holding the distributions (``None``: all of them).
        where: boolean mask broadcastable with the inputs; only its true elements count.

    Returns:
        The divergence of each distribution: the inputs' shape without ``axis``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.divergence import kl_divergence
        >>> log_p = jnp.log(jnp.array([0.25, 0.25, 0.5]))
        >>> round(float(kl_divergence(log_p, jnp.array([0.5, 0.0, 0.5]))), 4)  # 0.5 log 2
        0.3466

    Reference: Kullback & Leibler, "On Information and Sufficiency", Annals of Mathematical
    Statistics, 1951.
    """
    args = _inputs("kl_divergence", log_predictions, targets, "targets", where)
    return _divergence(*args, kind="kl", axis=_static_axis(axis))


def kl_divergence_with_log_targets(
    log_predictions: ArrayLike,
    log_targets: ArrayLike,
    axis: _Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """:func:`kl_divergence` with the targets given as log-probabilities.

    ``KL(t ‖ p) = Σ_i exp(log t_i) (log t_i − log p_i)``; a target ``log t_i = −∞`` contributes 0.

    Args:
        log_predictions: log-probabilities ``log p``, ``[..., dim]``.
        log_targets: log-probabilities ``log t``, broadcastable with ``log_predictions``.
        axis: axis or axes holding the distributions (``None``: all of them).
        where: boolean mask broadcastable with the inputs; only its true elements count.

    Returns:
        The divergence of each distribution: the inputs' shape without ``axis``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.divergence import kl_divergence_with_log_targets
        >>> log_p = jnp.log(jnp.array([0.25, 0.25, 0.5]))
        >>> log_t = jnp.log(jnp.array([0.5, 0.0, 0.5]))
        >>> round(float(kl_divergence_with_log_targets(log_p, log_t)), 4)
        0.3466
    """
    fn = "kl_divergence_with_log_targets"
    args = _inputs(fn, log_predictions, log_targets, "log_targets", where)
    return _divergence(*args, kind="log_targets", axis=_static_axis(axis))


def generalized_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: _Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Generalised Kullback–Leibler divergence, for measures that need not sum to one.

    ``D(t ‖ p) = Σ_i [t_i (log t_i − log p_i) − t_i + p_i]``: the Bregman divergence of the
    convex function ``f(x) = Σ x log x − x``. Every term is ``≥ 0``; for normalised ``t`` and
    ``p`` it equals :func:`kl_divergence`.

    Args:
        log_predictions: log-masses ``log p``, ``[..., dim]``.
        targets: masses ``t ≥ 0``, broadcastable with ``log_predictions``.
        axis: axis or axes holding the measures (``None``: all of them).
        where: boolean mask broadcastable with the inputs; only its true elements count.

    Returns:
        The divergence of each measure: the inputs' shape without ``axis``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.divergence import generalized_kl_divergence
        >>> log_p = jnp.log(jnp.array([1.0, 2.0]))
        >>> round(float(generalized_kl_divergence(log_p, jnp.array([1.0, 1.0]))), 4)  # 1 − log 2
        0.3069

    References: Bregman, "The relaxation method of finding the common point of convex sets and
    its application to the solution of problems in convex programming", 1967; Boyd &
    Vandenberghe, "Convex Optimization", 2004, p. 90.
    """
    args = _inputs("generalized_kl_divergence", log_predictions, targets, "targets", where)
    return _divergence(*args, kind="generalized", axis=_static_axis(axis))


def convex_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: _Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Deprecated name of :func:`generalized_kl_divergence` (as in optax, it warns).

    Args:
        log_predictions: log-masses ``log p``, ``[..., dim]``.
        targets: masses ``t ≥ 0``, broadcastable with ``log_predictions``.
        axis: axis or axes holding the measures (``None``: all of them).
        where: boolean mask broadcastable with the inputs; only its true elements count.

    Returns:
        ``generalized_kl_divergence(log_predictions, targets, axis=axis, where=where)``.

    Example:
        >>> import warnings, jax.numpy as jnp
        >>> from gradtx.losses.divergence import convex_kl_divergence
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     v = convex_kl_divergence(jnp.log(jnp.array([1.0, 2.0])), jnp.array([1.0, 1.0]))
        >>> round(float(v), 4), caught[0].category.__name__
        (0.3069, 'DeprecationWarning')
    """
    warnings.warn(
        "convex_kl_divergence is deprecated; use generalized_kl_divergence instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return generalized_kl_divergence(log_predictions, targets, axis=axis, where=where)
