"""Classification losses: cross-entropies, margin losses, sparsemax and Fenchel-Young losses,
label smoothing and Dice losses.

Names, arguments and meanings are those of ``optax.losses``. Every loss returns one value per
example (or per element for element-wise losses); reduce it yourself (``jnp.mean``).

Numerics: 16-bit inputs are computed in float32 and the result is cast back to the input's
dtype; cross-entropies use log-sum-exp and log-sigmoid forms, so logits of ``±1e4`` give finite
losses and finite gradients. A ``where`` mask removes entries from a loss as if those classes did
not exist: they are left out of the normaliser and out of the sum, and a row with no entry left
has loss ``0`` (and gradient ``0``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx.core import check_nonnegative, check_range
from gradtx.numerics import compute_dtype

__all__ = [
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "hinge_loss",
    "multiclass_hinge_loss",
    "perceptron_loss",
    "multiclass_perceptron_loss",
    "poly_loss_cross_entropy",
    "sparsemax_loss",
    "multiclass_sparsemax_loss",
    "make_fenchel_young_loss",
    "smooth_labels",
    "binary_dice_loss",
    "dice_loss",
    "multiclass_generalized_dice_loss",
]

ArrayLike = jax.typing.ArrayLike
Axis = int | tuple[int, ...] | None


# ----------------------------------------------------------------------------------------------
# Input checks and shared numerics.


def _floating(owner: str, name: str, x: ArrayLike) -> jax.Array:
    """``x`` as an array, which must have a floating dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{owner}: {name} must be a floating-point array, got dtype {x.dtype}")
    return x


def _integer(owner: str, name: str, x: ArrayLike) -> jax.Array:
    """``x`` as an array, which must have an integer dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{owner}: {name} must be an integer array, got dtype {x.dtype}")
    return x


def _out_dtype(*xs: Any) -> Any:
    """The dtype of the result: the promoted dtype, or the default float for integer inputs."""
    dt = jnp.result_type(*xs)
    return dt if jnp.issubdtype(dt, jnp.inexact) else jnp.result_type(float)


def _up(x: jax.Array, dtype: Any) -> jax.Array:
    """``x`` in the compute dtype of ``dtype`` (float32 for 16-bit floats)."""
    return jnp.asarray(x).astype(compute_dtype(dtype))


def _axes(owner: str, axis: Axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (an int, a tuple or ``None`` for all) as a tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if not isinstance(axis, tuple):
        try:
            axis = (operator.index(axis),)
        except TypeError:
            raise ValueError(
                f"{owner}: axis must be an int, a tuple of ints or None, got {axis!r}"
            ) from None
    out = []
    for a in axis:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"{owner}: axis {a} is out of bounds for an array of rank {ndim}")
        out.append(a % ndim)
    return tuple(out)


def _mask(owner: str, where: ArrayLike | None, ndim: int, axes: tuple[int, ...]) -> Any:
    """A boolean mask of rank ``ndim``: a mask given without the class axes gets them (size 1)."""
    if where is None:
        return None
    where = jnp.asarray(where).astype(bool)
    if where.ndim == ndim:
        return where
    if where.ndim + len(axes) != ndim:
        raise ValueError(
            f"{owner}: where must have the shape of the logits or of the logits without axis "
            f"{axes}, got shape {where.shape} for logits of rank {ndim}"
        )
    return jnp.expand_dims(where, axes)


def _normaliser(x: jax.Array, axes: tuple[int, ...], where: Any) -> tuple[jax.Array, jax.Array]:
    """``(m, log Σ exp(x − m))`` over ``axes`` (kept, size 1), counting only entries where
    ``where`` is true; ``m`` is the (finite) maximum, so ``logsumexp(x) = m + log Σ``.

    A row with no entry left gets ``m = 0`` and ``log Σ = 0`` (any finite value would do: every
    entry of that row is masked out by the caller).
    """
    xm = x if where is None else jnp.where(where, x, -jnp.inf)
    m = jnp.max(xm, axes, keepdims=True)
    m = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    s = jnp.sum(jnp.exp(xm - m), axes, keepdims=True)
    return m, jnp.log(jnp.where(s > 0, s, 1.0))


def _log_softmax(x: jax.Array, axes: tuple[int, ...], where: Any) -> jax.Array:
    """``log softmax(x) = (x − m) − log Σ exp(x − m)`` over ``axes`` (see :func:`_normaliser`).

    Entries outside ``where`` are set to 0, so that no caller forms ``exp`` of a huge masked
    logit (whose gradient would be ``0 · inf``); callers leave those entries out of their sums.
    """
    m, log_s = _normaliser(x, axes, where)
    log_p = (x - m) - log_s
    return log_p if where is None else jnp.where(where, log_p, 0.0)


def _log_mix(log_a: jax.Array, log_b: jax.Array, w: jax.Array) -> jax.Array:
    """``log((1 − w)·a + w·b)`` from ``log a`` and ``log b`` (``0 <= w <= 1``), in log space.

    A term whose weight is zero is left out of the maximum, so ``w ∈ {0, 1}`` with a negligible
    other term never underflows to ``log 0``.
    """
    use_a, use_b = w < 1, w > 0
    m = jnp.maximum(jnp.where(use_a, log_a, -jnp.inf), jnp.where(use_b, log_b, -jnp.inf))
    m = lax.stop_gradient(m)
    ea = jnp.exp(jnp.where(use_a, log_a - m, 0.0))
    eb = jnp.exp(jnp.where(use_b, log_b - m, 0.0))
    return m + jnp.log((1 - w) * ea + w * eb)


def _label_mask(labels: ArrayLike, num_classes: int) -> jax.Array:
    """One-hot booleans ``labels[..., None] == k`` (all false for a label outside the range)."""
    return jnp.asarray(labels)[..., None] == jnp.arange(num_classes)


def _sparsemax(z: jax.Array) -> jax.Array:
    """Euclidean projection of ``z`` onto the probability simplex along the last axis.

    ``p = max(z − τ, 0)`` with ``τ`` such that ``Σ p = 1`` (Martins & Astudillo, 2016): sort
    ``z`` decreasingly, the support is the ``k`` largest with ``1 + k z_(k) > Σ_{j<=k} z_(j)``,
    and ``τ = (Σ_{j<=k} z_(j) − 1) / k``. ``z`` is first shifted by its maximum (sparsemax does
    not change under a shift), which keeps the sums exact for scores of ``±1e4``.
    """
    z = z - lax.stop_gradient(jnp.max(z, -1, keepdims=True))
    zs = jnp.flip(jnp.sort(z, axis=-1), axis=-1)
    k = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    support = 1 + k * zs > jnp.cumsum(zs, axis=-1)
    size = jnp.sum(support, -1, keepdims=True).astype(z.dtype)
    tau = (jnp.sum(jnp.where(support, zs, 0.0), -1, keepdims=True) - 1) / size
    return jnp.maximum(z - tau, 0.0)


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


# ----------------------------------------------------------------------------------------------
# Cross-entropies.


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Softmax cross-entropy between logits and target distributions (categorical
    cross-entropy).

    ``ℓ(x, y) = −Σ_k y_k log softmax(x)_k = logsumexp(x) Σ_k y_k − Σ_k y_k x_k``, summed over
    ``axis``. With ``where``, classes outside the mask are left out of the softmax and the sum.
    ``0 · log 0`` is not special-cased: a logit of ``−inf`` gives ``nan`` (see
    :func:`safe_softmax_cross_entropy`).

    Args:
        logits: unnormalised log-probabilities, ``[..., num_classes]``.
        labels: target distributions (e.g. one-hot), broadcastable to ``logits``.
        axis: the class axis or axes (``None``: all axes).
        where: which entries take part, of the shape of ``logits`` or of ``logits`` without
            ``axis``.

    Returns:
        The loss, of the shape of ``logits`` without ``axis``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
        >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.2, 0.8]])
        >>> loss = losses.softmax_cross_entropy(logits, labels)
        >>> [round(float(v), 4) for v in loss]
        [0.1698, 0.652]

    Reference:
        Goodfellow, Bengio & Courville, *Deep Learning*, MIT Press 2016, section 6.2.2.
    """
    owner = "softmax_cross_entropy"
    logits = _floating(owner, "logits", logits)
    labels = jnp.asarray(labels)
    axes = _axes(owner, axis, logits.ndim)
    where = _mask(owner, where, logits.ndim, axes)
    out = _out_dtype(logits, labels)
    log_p = _log_softmax(_up(logits, out), axes, where)
    terms = _up(labels, out) * log_p
    if where is not None:
        terms = jnp.where(where, terms, 0.0)
    return (-jnp.sum(terms, axes)).astype(out)


def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Softmax cross-entropy with the target given as a class index.

    ``ℓ(x, c) = logsumexp(x) − x_c``: :func:`softmax_cross_entropy` with one-hot labels, without
    forming them. With a tuple ``axis`` the class is a flat (row-major) index into the slice
    ``logits[axis]``, its axes taken in the order given. With ``where``, masked classes are left
    out of the normaliser; a row with no class left has loss ``0``.

    Args:
        logits: unnormalised log-probabilities, ``[..., num_classes]``.
        labels: integer class indices, of the shape of ``logits`` without ``axis``.
        axis: the class axis, or a tuple of axes.
        where: which entries take part, of the shape of ``logits`` or of ``logits`` without
            ``axis``.

    Returns:
        The loss, of the shape of ``labels``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
        >>> labels = jnp.array([0, 1])
        >>> loss = losses.softmax_cross_entropy_with_integer_labels(logits, labels)
        >>> [round(float(v), 4) for v in loss]
        [0.1698, 2.652]

    Reference:
        Goodfellow, Bengio & Courville, *Deep Learning*, MIT Press 2016, section 6.2.2.
    """
    owner = "softmax_cross_entropy_with_integer_labels"
    logits = _floating(owner, "logits", logits)
    labels = _integer(owner, "labels", labels)
    if axis is None:
        raise ValueError(f"{owner}: axis must be an int or a tuple of ints, got None")
    axes = _axes(owner, axis, logits.ndim)
    where = _mask(owner, where, logits.ndim, axes)
    x = _up(logits, logits.dtype)
    if len(axes) > 1 or not isinstance(axis, int):
        # Move the class axes last (in the order given) and flatten them into one.
        batch = tuple(a for a in range(x.ndim) if a not in axes)
        flat = (*(x.shape[a] for a in batch), -1)
        x = jnp.transpose(x, batch + axes).reshape(flat)
        if where is not None:
            where = jnp.broadcast_to(where, logits.shape)
            where = jnp.transpose(where, batch + axes).reshape(flat)
        ax = len(batch)
    else:
        ax = axes[0]
    picked = jnp.take_along_axis(x, jnp.expand_dims(labels, ax), axis=ax)
    m, log_s = _normaliser(x, (ax,), where)
    loss = jnp.squeeze((m - picked) + log_s, ax)  # logsumexp(x) − x_c
    if where is not None:
        loss = jnp.where(jnp.any(where, ax), loss, 0.0)
    return loss.astype(logits.dtype)


def safe_softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Softmax cross-entropy over the last axis with ``0 · log 0 = 0``.

    ``ℓ(x, y) = −Σ_{k: y_k ≠ 0} y_k log softmax(x)_k``: as :func:`softmax_cross_entropy`, but a
    logit of ``−inf`` (a class made impossible) with label ``0`` contributes nothing instead of
    ``nan``, in the value and in the gradients.

    Args:
        logits: unnormalised log-probabilities, ``[..., num_classes]``; may hold ``−inf``.
        labels: target distributions, broadcastable to ``logits``.

    Returns:
        The loss, of shape ``[...]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> logits = jnp.array([[2.0, 0.0, -jnp.inf]])
        >>> loss = losses.safe_softmax_cross_entropy(logits, jnp.array([[1.0, 0.0, 0.0]]))
        >>> [round(float(v), 4) for v in loss]
        [0.1269]
    """
    owner = "safe_softmax_cross_entropy"
    logits = _floating(owner, "logits", logits)
    labels = jnp.asarray(labels)
    out = _out_dtype(logits, labels)
    y = _up(labels, out)
    log_p = _log_softmax(_up(logits, out), (logits.ndim - 1,), None)
    nonzero = y != 0
    terms = jnp.where(nonzero, y * jnp.where(nonzero, log_p, 0.0), 0.0)
    return (-jnp.sum(terms, -1)).astype(out)


def sigmoid_binary_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Element-wise sigmoid (logistic) binary cross-entropy.

    ``ℓ(x, y) = −y log σ(x) − (1 − y) log(1 − σ(x)) = −y log σ(x) − (1 − y) log σ(−x)``, with
    ``log σ`` evaluated stably. Each element is an independent yes/no prediction (multi-label
    classification); ``labels`` may be soft targets in ``[0, 1]``.

    Args:
        logits: logits of the positive class.
        labels: targets in ``[0, 1]``, broadcastable to ``logits``.

    Returns:
        The loss of each element, in the dtype of ``logits``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> logits = jnp.array([3.0, -1.0, 0.0])
        >>> loss = losses.sigmoid_binary_cross_entropy(logits, jnp.array([1.0, 1.0, 0.5]))
        >>> [round(float(v), 4) for v in loss]
        [0.0486, 1.3133, 0.6931]

    Reference:
        Goodfellow, Bengio & Courville, *Deep Learning*, MIT Press 2016, section 6.2.2.2.
    """
    logits = _floating("sigmoid_binary_cross_entropy", "logits", logits)
    x, y = _up(logits, logits.dtype), _up(labels, logits.dtype)
    loss = -y * jax.nn.log_sigmoid(x) - (1 - y) * jax.nn.log_sigmoid(-x)
    return loss.astype(logits.dtype)


def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
) -> jax.Array:
    """Element-wise sigmoid focal loss: binary cross-entropy scaled down on easy examples.

    ``ℓ = α_t (1 − p_t)^γ · BCE(x, y)`` with ``p = σ(x)``, ``1 − p_t = y (1 − p) + (1 − y) p``
    (the probability given to the wrong answer) and ``α_t = α y + (1 − α)(1 − y)`` (``1`` when
    ``alpha`` is ``None``). ``(1 − p_t)^γ`` is computed as ``exp(γ log(1 − p_t))`` with
    ``log(1 − p_t)`` formed from ``log σ(±x)``, so it stays exact for confident predictions
    and soft labels. ``γ = 0`` gives :func:`sigmoid_binary_cross_entropy`.

    Args:
        logits: logits of the positive class.
        labels: targets in ``[0, 1]`` (binary or soft), broadcastable to ``logits``.
        alpha: weight of the positive class in ``[0, 1]``, or ``None`` for no weighting.
        gamma: focusing exponent ``γ >= 0``.

    Returns:
        The loss of each element.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> logits = jnp.array([3.0, -1.0])
        >>> loss = losses.sigmoid_focal_loss(logits, jnp.array([1.0, 1.0]), alpha=0.25)
        >>> [round(float(v), 4) for v in loss]
        [0.0, 0.1755]

    Reference:
        Lin, Goyal, Girshick, He & Dollár, "Focal Loss for Dense Object Detection", ICCV 2017,
        arXiv:1708.02002.
    """
    owner = "sigmoid_focal_loss"
    logits = _floating(owner, "logits", logits)
    if alpha is not None:
        check_range(owner, "alpha", alpha, low=0.0, high=1.0)
    check_nonnegative(owner, "gamma", gamma)
    x, y = _up(logits, logits.dtype), _up(labels, logits.dtype)
    log_p, log_q = jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)
    ce = -y * log_p - (1 - y) * log_q
    log_wrong = _log_mix(log_p, log_q, y)  # log(1 − p_t) = log((1 − y) p + y (1 − p))
    loss = jnp.exp(gamma * log_wrong) * ce
    if alpha is None:
        return loss.astype(_out_dtype(logits, gamma))
    loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss.astype(_out_dtype(logits, gamma, alpha))


def poly_loss_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: ArrayLike = 2.0,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Poly-1 loss: softmax cross-entropy plus ``ε`` times the probability missed.

    ``ℓ(x, y) = CE(x, y) + ε Σ_k y_k (1 − softmax(x)_k)``: the first term of the expansion of
    the cross-entropy in powers of ``(1 − p_t)``, with its coefficient changed from ``1`` to
    ``1 + ε``. The paper suggests ``ε = 2`` for ImageNet classification and ``ε = −1`` for
    detection. ``axis`` and ``where`` mean what they mean in :func:`softmax_cross_entropy`.

    Args:
        logits: unnormalised log-probabilities, ``[..., num_classes]``.
        labels: target distributions (floating), broadcastable to ``logits``.
        epsilon: the coefficient ``ε``.
        axis: the class axis or axes (``None``: all axes).
        where: which entries take part, of the shape of ``logits`` or of ``logits`` without
            ``axis``.

    Returns:
        The loss, of the shape of ``logits`` without ``axis``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> logits = jnp.array([[2.0, 0.0, -1.0]])
        >>> loss = losses.poly_loss_cross_entropy(logits, jnp.array([[1.0, 0.0, 0.0]]))
        >>> [round(float(v), 4) for v in loss]
        [0.4823]

    Reference:
        Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss
        Functions", ICLR 2022, arXiv:2204.12511.
    """
    owner = "poly_loss_cross_entropy"
    logits = _floating(owner, "logits", logits)
    labels = _floating(owner, "labels", labels)
    check_range(owner, "epsilon", epsilon)
    axes = _axes(owner, axis, logits.ndim)
    where = _mask(owner, where, logits.ndim, axes)
    out = _out_dtype(logits, labels)
    y = _up(labels, out)
    log_p = _log_softmax(_up(logits, out), axes, where)
    ce_terms, miss_terms = -y * log_p, y * -jnp.expm1(log_p)  # 1 − p = −expm1(log p)
    if where is not None:
        ce_terms = jnp.where(where, ce_terms, 0.0)
        miss_terms = jnp.where(where, miss_terms, 0.0)
    loss = jnp.sum(ce_terms, axes) + epsilon * jnp.sum(miss_terms, axes)
    return loss.astype(_out_dtype(logits, labels, epsilon))


# ----------------------------------------------------------------------------------------------
# Margin losses.


def hinge_loss(predictor_outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
    """Element-wise binary hinge loss (the loss of the support vector machine).

    ``ℓ(f, t) = max(0, 1 − t f)`` for a score ``f`` and a target ``t ∈ {−1, 1}``.

    Args:
        predictor_outputs: scores of the positive class.
        targets: ``−1`` or ``1``, broadcastable to ``predictor_outputs``.

    Returns:
        The loss of each element.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> loss = losses.hinge_loss(jnp.array([2.0, 0.3, -0.5]), jnp.array([1.0, 1.0, 1.0]))
        >>> [round(float(v), 4) for v in loss]
        [0.0, 0.7, 1.5]

    Reference:
        Cortes & Vapnik, "Support-Vector Networks", Machine Learning 20, 1995.
    """
    f, t = jnp.asarray(predictor_outputs), jnp.asarray(targets)
    out = _out_dtype(f, t)
    return jnp.maximum(0.0, 1 - _up(f, out) * _up(t, out)).astype(out)


def perceptron_loss(predictor_outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
    """Element-wise binary perceptron loss.

    ``ℓ(f, t) = max(0, −t f)`` for a score ``f`` and a target ``t ∈ {−1, 1}``: zero exactly when
    the sign of ``f`` is right, with no margin (compare :func:`hinge_loss`).

    Args:
        predictor_outputs: scores of the positive class.
        targets: ``−1`` or ``1``, of the same shape as ``predictor_outputs``.

    Returns:
        The loss of each element.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> loss = losses.perceptron_loss(jnp.array([2.0, 0.3, -0.5]), jnp.array([1.0, -1.0, 1.0]))
        >>> [round(float(v), 4) for v in loss]
        [0.0, 0.3, 0.5]

    Reference:
        Rosenblatt, "The Perceptron: a probabilistic model for information storage and
        organization in the brain", Psychological Review 65, 1958.
    """
    f, t = jnp.asarray(predictor_outputs), jnp.asarray(targets)
    if f.shape != t.shape:
        raise ValueError(
            f"perceptron_loss: predictor_outputs and targets must have the same shape, got "
            f"{f.shape} and {t.shape}"
        )
    out = _out_dtype(f, t)
    return jnp.maximum(0.0, -_up(f, out) * _up(t, out)).astype(out)


def multiclass_hinge_loss(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Multiclass hinge loss (Crammer-Singer) over the last axis.

    ``ℓ(s, c) = max_k (s_k + [k ≠ c]) − s_c``: zero when the right class beats every other by a
    margin of at least 1. A label outside ``[0, num_classes)`` matches no class.

    Args:
        scores: class scores, ``[..., num_classes]``.
        labels: class indices, ``[...]``.

    Returns:
        The loss, of shape ``[...]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> scores = jnp.array([[2.0, 1.5, -1.0], [0.0, 3.0, 0.5]])
        >>> loss = losses.multiclass_hinge_loss(scores, jnp.array([0, 0]))
        >>> [round(float(v), 4) for v in loss]
        [0.5, 4.0]

    Reference:
        Crammer & Singer, "On the Algorithmic Implementation of Multiclass Kernel-based Vector
        Machines", JMLR 2, 2001.
    """
    s = jnp.asarray(scores)
    out = _out_dtype(s)
    s = _up(s, out)
    hit = _label_mask(labels, s.shape[-1])
    margin = jnp.max(s + jnp.where(hit, 0.0, 1.0), -1)
    return (margin - jnp.sum(jnp.where(hit, s, 0.0), -1)).astype(out)


def multiclass_perceptron_loss(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Multiclass perceptron loss over the last axis.

    ``ℓ(s, c) = max_k s_k − s_c``: zero when the right class has the highest score. A label
    outside ``[0, num_classes)`` matches no class.

    Args:
        scores: class scores, ``[..., num_classes]``.
        labels: class indices, ``[...]``.

    Returns:
        The loss, of shape ``[...]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> scores = jnp.array([[2.0, 1.5, -1.0], [0.0, 3.0, 0.5]])
        >>> loss = losses.multiclass_perceptron_loss(scores, jnp.array([0, 0]))
        >>> [round(float(v), 4) for v in loss]
        [0.0, 3.0]

    Reference:
        Collins, "Discriminative Training Methods for Hidden Markov Models: Theory and
        Experiments with Perceptron Algorithms", EMNLP 2002.
    """
    s = jnp.asarray(scores)
    out = _out_dtype(s)
    s = _up(s, out)
    hit = _label_mask(labels, s.shape[-1])
    return (jnp.max(s, -1) - jnp.sum(jnp.where(hit, s, 0.0), -1)).astype(out)


# ----------------------------------------------------------------------------------------------
# Sparsemax and Fenchel-Young losses.


def sparsemax_loss(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Element-wise binary sparsemax loss: the Fenchel-Young loss of the sparse sigmoid.

    ``ℓ(x, y) = sparseplus(−x)`` for ``y = 1`` and ``sparseplus(x)`` for ``y = 0``, where
    ``sparseplus(z) = 0`` for ``z <= −1``, ``(z + 1)² / 4`` for ``−1 < z < 1`` and ``z`` for
    ``z >= 1``. It is zero exactly when the sparse sigmoid ``clip((x + 1) / 2, 0, 1)`` equals
    the label.

    Args:
        logits: scores of the positive class.
        labels: ``0`` or ``1`` (any nonzero value counts as ``1``), broadcastable to ``logits``.

    Returns:
        The loss of each element.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> logits = jnp.array([2.0, 0.0, -0.5, -2.0])
        >>> loss = losses.sparsemax_loss(logits, jnp.array([1, 1, 1, 1]))
        >>> [round(float(v), 4) for v in loss]
        [0.0, 0.25, 0.5625, 2.0]

    Reference:
        Blondel, Martins & Niculae, "Learning with Fenchel-Young Losses", JMLR 21, 2020,
        section 4.4; arXiv:1901.02324.
    """
    x = jnp.asarray(logits)
    out = _out_dtype(x)
    x = _up(x, out)
    z = jnp.where(jnp.asarray(labels) != 0, -x, x)
    loss = jnp.where(z <= -1, 0.0, jnp.where(z >= 1, z, 0.25 * (z + 1) ** 2))
    return loss.astype(out)


def multiclass_sparsemax_loss(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Multiclass sparsemax loss over the last axis.

    The Fenchel-Young loss of the Gini entropy: with ``p = sparsemax(s)``, the Euclidean
    projection of ``s`` onto the probability simplex,
    ``ℓ(s, c) = ⟨p, s − s_c⟩ + ½ (1 − ‖p‖²) = ½ ‖e_c − s‖² − ½ ‖p − s‖²``. It is zero exactly
    when ``p = e_c``, and its gradient is ``p − e_c``. A label outside ``[0, num_classes)``
    matches no class.

    Args:
        scores: class scores, ``[..., num_classes]``.
        labels: class indices, ``[...]``.

    Returns:
        The loss, of shape ``[...]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> scores = jnp.array([[2.0, 0.5, -1.0], [0.2, 0.1, 0.0]])
        >>> loss = losses.multiclass_sparsemax_loss(scores, jnp.array([0, 2]))
        >>> [round(float(v), 4) for v in loss]
        [0.0, 0.4433]

    Reference:
        Martins & Astudillo, "From Softmax to Sparsemax: A Sparse Model of Attention and
        Multi-Label Classification", ICML 2016, arXiv:1602.02068.
    """
    s = jnp.asarray(scores)
    out = _out_dtype(s)
    s = _up(s, out)
    p = _sparsemax(s)
    hit = _label_mask(labels, s.shape[-1])
    s_c = jnp.sum(jnp.where(hit, s, 0.0), -1, keepdims=True)
    gap = jnp.where(p > 0, s - s_c, 0.0)
    loss = jnp.sum(p * gap, -1) + 0.5 * (1 - jnp.sum(p * p, -1))
    return loss.astype(out)


def make_fenchel_young_loss(max_fun: Callable[..., ArrayLike]) -> Callable[..., jax.Array]:
    """Build the Fenchel-Young loss of a regularised max function.

    For a convex ``max_fun`` ``Ω*`` (e.g. ``logsumexp``, whose loss is the softmax
    cross-entropy), the loss is ``ℓ(s, y) = Ω*(s) − ⟨y, s⟩`` (up to a term in ``y`` alone),
    computed over the last axis of ``scores``; leading axes are a batch, ``max_fun`` is called
    on one vector at a time. Its gradient in ``s`` is ``∇Ω*(s) − y``.

    Args:
        max_fun: a function of one score vector returning a scalar; extra positional and
            keyword arguments given to the loss are passed on to it.

    Returns:
        ``loss(scores, targets, *args, **kwargs)``, of shape ``scores.shape[:-1]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jax.scipy.special import logsumexp
        >>> from gradtx import losses
        >>> fy = losses.make_fenchel_young_loss(logsumexp)
        >>> print(fy(jnp.array([[2.0, 0.0, -1.0]]), jnp.array([[1.0, 0.0, 0.0]])))
        [0.16984606]

    Reference:
        Blondel, Martins & Niculae, "Learning with Fenchel-Young Losses", JMLR 21, 2020,
        arXiv:1901.02324.
    """
    if not callable(max_fun):
        raise TypeError(f"make_fenchel_young_loss: max_fun must be callable, got {max_fun!r}")

    def fenchel_young_loss(
        scores: ArrayLike, targets: ArrayLike, *args: Any, **kwargs: Any
    ) -> jax.Array:
        """``max_fun(scores) − ⟨targets, scores⟩`` over the last axis."""
        s = jnp.asarray(scores)
        per_row = jnp.vectorize(lambda v: max_fun(v, *args, **kwargs), signature="(n)->()")
        return per_row(s) - jnp.sum(jnp.asarray(targets) * s, -1)

    return fenchel_young_loss


# ----------------------------------------------------------------------------------------------
# Label smoothing.


def smooth_labels(
    labels: ArrayLike,
    alpha: ArrayLike,
    *,
    axis: Axis = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Label smoothing: mix the targets with the uniform distribution over the classes.

    ``y' = (1 − α) y + α / K`` where ``K`` is the number of classes along ``axis`` (``None``:
    all axes), or with ``where`` the number of classes the mask keeps in that row. Entries
    outside the mask are transformed the same way; give the same ``where`` to the loss to leave
    them out. A row whose mask keeps nothing counts ``K = 1`` (instead of dividing by zero).

    Args:
        labels: floating targets (e.g. one-hot), ``[..., num_classes]``.
        alpha: the smoothing weight ``α`` in ``[0, 1]``.
        axis: the class axis or axes.
        where: which classes count, of the shape of ``labels`` or of ``labels`` without
            ``axis``.

    Returns:
        The smoothed labels, of the shape of ``labels``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> smoothed = losses.smooth_labels(jnp.array([0.0, 1.0, 0.0, 0.0]), 0.2)
        >>> [round(float(v), 4) for v in smoothed]
        [0.05, 0.85, 0.05, 0.05]

    Reference:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016,
        section 7, arXiv:1512.00567; Müller, Kornblith & Hinton, "When Does Label Smoothing
        Help?", NeurIPS 2019, arXiv:1906.02629.
    """
    owner = "smooth_labels"
    labels = _floating(owner, "labels", labels)
    check_range(owner, "alpha", alpha, low=0.0, high=1.0)
    axes = _axes(owner, axis, labels.ndim)
    where = _mask(owner, where, labels.ndim, axes)
    out = _out_dtype(labels, alpha)
    if where is None:
        k = math.prod(labels.shape[a] for a in axes)
    else:
        where = jnp.broadcast_to(where, labels.shape)
        k = jnp.maximum(jnp.sum(where, axes, keepdims=True), 1).astype(compute_dtype(out))
    return ((1 - alpha) * _up(labels, out) + alpha / k).astype(out)


# ----------------------------------------------------------------------------------------------
# Dice losses (segmentation).

_REDUCTIONS = ("mean", "sum", "none")


def _dice(
    owner: str,
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    class_weights: ArrayLike | None,
    smooth: ArrayLike,
    alpha: ArrayLike,
    beta: ArrayLike,
    apply_softmax: bool,
    reduction: str,
    ignore_background: bool,
    axis: Any,
) -> jax.Array:
    """The Tversky/Dice loss per class, weighted, optionally without class 0, then reduced."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    check_nonnegative(owner, "smooth", smooth)
    check_nonnegative(owner, "alpha", alpha)
    check_nonnegative(owner, "beta", beta)
    p, t = jnp.asarray(predictions), jnp.asarray(targets)
    if p.ndim == t.ndim - 1:
        p = p[..., None]
    if t.ndim == p.ndim - 1:
        t = t[..., None]
    if p.shape != t.shape:
        raise ValueError(
            f"{owner}: predictions and targets must have the same shape (a class axis of size 1 "
            f"may be left out of one of them), got {jnp.shape(predictions)} and "
            f"{jnp.shape(targets)}"
        )
    if p.ndim == 0:
        raise ValueError(f"{owner}: predictions must have at least one axis, got a scalar")
    out = _out_dtype(p, t)
    num_classes = p.shape[-1]
    if not apply_softmax and _is_concrete(p):
        _check_probabilities(owner, np.asarray(p, dtype=np.float64), p.dtype)
    p, t = _up(p, out), _up(t, out)
    if apply_softmax:
        p = jax.nn.sigmoid(p) if num_classes == 1 else jax.nn.softmax(p, axis=-1)
    if axis is None:
        axis = tuple(range(1, p.ndim - 1))
    both = jnp.sum(p * t, axis)
    fp = jnp.sum(p, axis) - both
    fn = jnp.sum(t, axis) - both
    loss = 1 - (both + smooth) / (both + alpha * fp + beta * fn + smooth)
    if class_weights is not None:
        w = jnp.asarray(class_weights)
        if w.ndim != 1 or w.shape[0] not in (1, num_classes):
            raise ValueError(
                f"{owner}: class_weights must have shape ({num_classes},), got {w.shape}"
            )
        loss = loss * _up(w, out)
    if ignore_background and num_classes > 1:
        loss = loss[..., 1:]
    if reduction == "mean":
        loss = jnp.mean(loss, -1)
    elif reduction == "sum":
        loss = jnp.sum(loss, -1)
    return loss.astype(out)


def _check_probabilities(owner: str, p: np.ndarray, dtype: Any) -> None:
    """Concrete predictions given as probabilities: in ``[0, 1]``, summing to 1 over classes."""
    if p.size == 0:
        return
    if p.shape[-1] == 1:
        lo, hi = float(p.min()), float(p.max())
        if lo < 0 or hi > 1:
            raise ValueError(
                f"{owner}: predictions must be probabilities in [0, 1] when no sigmoid is "
                f"applied, got values in [{lo:.6g}, {hi:.6g}]"
            )
        return
    sums = p.sum(-1)
    tol = 1e-2 + p.shape[-1] * float(jnp.finfo(dtype).eps)  # loose: rounded probabilities pass
    if not np.all(np.abs(sums - 1) <= tol):
        raise ValueError(
            f"{owner}: predictions must be probability distributions over the last axis when "
            f"no softmax is applied, got sums in [{sums.min():.6g}, {sums.max():.6g}]"
        )


def dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    class_weights: ArrayLike | None = None,
    smooth: ArrayLike = 1.0,
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.5,
    apply_softmax: bool = True,
    reduction: str = "mean",
    ignore_background: bool = False,
    axis: Any = None,
) -> jax.Array:
    """Soft Dice loss for segmentation, with Tversky's weights on false positives/negatives.

    Per class ``c``, with ``p`` the predicted probabilities and ``t`` the targets summed over
    the spatial axes: ``I = Σ p t``, ``FP = Σ p − I``, ``FN = Σ t − I`` and
    ``ℓ_c = 1 − (I + s) / (I + α FP + β FN + s)``. ``α = β = ½`` is the Dice loss
    ``1 − (2I + 2s) / (Σ p + Σ t + 2s)``; ``α = β = 1`` the Jaccard (IoU) loss. The per-class
    losses are multiplied by ``class_weights``, class 0 is dropped when ``ignore_background``,
    and the classes are averaged, summed or kept (``reduction``).

    Args:
        predictions: logits (or probabilities when ``apply_softmax=False``) of shape
            ``[batch, ..., num_classes]``; a binary task may have a class axis of size 1 or
            none.
        targets: one-hot (or soft) targets of the same shape.
        class_weights: per-class weights, shape ``[num_classes]``, or ``None``.
        smooth: ``s >= 0``, added to numerator and denominator (an empty class scores 0).
        alpha: weight ``α >= 0`` of false positives.
        beta: weight ``β >= 0`` of false negatives.
        apply_softmax: turn logits into probabilities (softmax over classes; sigmoid when there
            is one class). When false, concrete predictions are checked to be probabilities.
        reduction: ``'mean'``, ``'sum'`` or ``'none'`` over the classes.
        ignore_background: leave class 0 out (when there is more than one class).
        axis: the axes summed over; ``None``: every axis but the first and the last.

    Returns:
        ``[batch]`` for ``'mean'``/``'sum'``, ``[batch, num_classes]`` for ``'none'`` (with the
        default ``axis``).

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> probs = jnp.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]])  # 1 image, 3 pixels
        >>> targets = jnp.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
        >>> loss = losses.dice_loss(probs, targets, apply_softmax=False, smooth=0.0)
        >>> [round(float(v), 4) for v in loss]
        [0.2468]

    References:
        Milletari, Navab & Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
        Medical Image Segmentation", 3DV 2016, arXiv:1606.04797; Salehi, Erdogmus & Gholipour,
        "Tversky loss function for image segmentation using 3D fully convolutional deep
        networks", MLMI 2017, arXiv:1706.05721.
    """
    return _dice(
        "dice_loss",
        predictions,
        targets,
        class_weights=class_weights,
        smooth=smooth,
        alpha=alpha,
        beta=beta,
        apply_softmax=apply_softmax,
        reduction=reduction,
        ignore_background=ignore_background,
        axis=axis,
    )


def binary_dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    smooth: ArrayLike = 1.0,
    apply_sigmoid: bool = True,
) -> jax.Array:
    """Dice loss of a binary segmentation: :func:`dice_loss` with one class.

    ``ℓ = 1 − (2 Σ p t + 2s) / (Σ p + Σ t + 2s)`` with ``p = σ(predictions)`` (or the
    predictions themselves, probabilities in ``[0, 1]``, when ``apply_sigmoid=False``), summed
    over every axis but the first.

    Args:
        predictions: logits of shape ``[batch, ...]`` or ``[batch, ..., 1]``.
        targets: binary (or soft) targets of the same shape.
        smooth: ``s >= 0``.
        apply_sigmoid: apply the sigmoid to ``predictions``.

    Returns:
        The loss, of shape ``[batch]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> probs = jnp.array([[0.9, 0.2, 0.6]])
        >>> targets = jnp.array([[1.0, 0.0, 1.0]])
        >>> loss = losses.binary_dice_loss(probs, targets, apply_sigmoid=False, smooth=0.0)
        >>> [round(float(v), 4) for v in loss]
        [0.1892]

    Reference:
        Milletari, Navab & Ahmadi, "V-Net", 3DV 2016, arXiv:1606.04797.
    """
    p, t = jnp.asarray(predictions), jnp.asarray(targets)
    if p.ndim == t.ndim and (p.ndim == 0 or p.shape[-1] != 1):
        p, t = p[..., None], t[..., None]
    return _dice(
        "binary_dice_loss",
        p,
        t,
        class_weights=None,
        smooth=smooth,
        alpha=0.5,
        beta=0.5,
        apply_softmax=apply_sigmoid,
        reduction="mean",
        ignore_background=False,
        axis=None,
    )


def multiclass_generalized_dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    smooth: ArrayLike = 1.0,
    apply_softmax: bool = True,
    ignore_background: bool = False,
) -> jax.Array:
    """Dice loss with classes weighted by their inverse squared frequency, as one scalar.

    With ``f_c = Σ t_c`` over the batch and spatial axes, the weights are
    ``w_c = 1 / (f_c² + 10⁻⁷)`` normalised to ``Σ_c w_c = K`` (``K`` classes); the loss is the
    mean over the batch and the (kept) classes of ``w_c ℓ_c``, with ``ℓ_c`` the Dice loss of
    :func:`dice_loss` (``α = β = ½``). Rare classes weigh as much as frequent ones.

    Args:
        predictions: logits (or probabilities) of shape ``[batch, ..., num_classes]``.
        targets: one-hot targets of the same shape.
        smooth: ``s >= 0``.
        apply_softmax: apply the softmax over the classes.
        ignore_background: leave class 0 out of the mean (its weight still counts in the
            normalisation).

    Returns:
        A scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx import losses
        >>> probs = jnp.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]])
        >>> targets = jnp.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
        >>> loss = losses.multiclass_generalized_dice_loss(probs, targets, apply_softmax=False)
        >>> round(float(loss), 4)
        0.1548

    Reference:
        Sudre et al., "Generalised Dice overlap as a deep learning loss function for highly
        unbalanced segmentations", DLMIA 2017, arXiv:1707.03237.
    """
    owner = "multiclass_generalized_dice_loss"
    p, t = jnp.asarray(predictions), jnp.asarray(targets)
    if p.shape != t.shape or p.ndim == 0:
        raise ValueError(
            f"{owner}: predictions and targets must have the same shape [..., num_classes], "
            f"got {p.shape} and {t.shape}"
        )
    out = _out_dtype(p, t)
    freq = jnp.sum(_up(t, out), tuple(range(t.ndim - 1)))
    w = 1 / (freq**2 + 1e-7)
    w = w * (w.shape[0] / jnp.sum(w))
    per_class = _dice(
        owner,
        p,
        t,
        class_weights=w,
        smooth=smooth,
        alpha=0.5,
        beta=0.5,
        apply_softmax=apply_softmax,
        reduction="none",
        ignore_background=ignore_background,
        axis=None,
    )
    return jnp.mean(_up(per_class, out)).astype(out)
