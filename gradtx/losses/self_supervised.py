"""Self-supervised (metric-learning) losses: NT-Xent and the triplet margin loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from gradtx.core import check_range
from gradtx.losses.regression import _check_broadcast, _compiled, _floating
from gradtx.numerics import cast, compute_dtype

__all__ = ["ntxent", "triplet_margin_loss"]


def ntxent(embeddings: ArrayLike, labels: ArrayLike, temperature: ArrayLike = 0.07) -> jax.Array:
    """Normalised temperature-scaled cross-entropy (NT-Xent), the SimCLR contrastive loss.

    With ``S_ij = cos(e_i, e_j) / τ`` (cosine similarity of the embeddings, each squared norm
    floored at the dtype's machine epsilon), every positive pair ``(i, j)`` — ``i ≠ j`` with
    ``labels[i] == labels[j]`` — is scored against the negatives ``N(i)`` of its anchor
    (``labels[k] != labels[i]``)::

        ℓ_ij = −log( exp(S_ij) / (exp(S_ij) + Σ_{k ∈ N(i)} exp(S_ik)) )

    and the loss is the mean of ``ℓ_ij`` over all positive pairs (0 when there are none). It is
    computed as ``softplus(logsumexp_{k ∈ N(i)} S_ik − S_ij)``, so it stays finite however small
    ``τ`` is.

    Args:
        embeddings: ``[batch, features]`` real floating array.
        labels: ``[batch]`` group ids; embeddings with equal ids are positive pairs.
        temperature: ``τ > 0``; smaller values sharpen the softmax.

    Returns:
        The scalar mean loss over the positive pairs.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.self_supervised import ntxent
        >>> e = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> round(float(ntxent(e, jnp.array([0, 0, 1, 1]), temperature=0.5)), 4)
        0.2965

    References: Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020; Sohn, "Improved Deep Metric Learning with Multi-class N-pair
    Loss Objective", NeurIPS 2016.
    """
    fn = "ntxent"
    check_range(fn, "temperature", temperature, low=0.0, low_open=True)
    e = _floating(fn, "embeddings", embeddings)
    labels = jnp.asarray(labels)
    if e.ndim != 2:
        raise ValueError(f"{fn}: embeddings must be [batch, features], got shape {e.shape}")
    if labels.shape != e.shape[:1]:
        raise ValueError(
            f"{fn}: labels must have shape ({e.shape[0]},) to match embeddings {e.shape}, "
            f"got {labels.shape}"
        )
    return _ntxent(e, labels, temperature)


@_compiled()
def _ntxent(e, labels, temperature):
    dtype = e.dtype
    ct = compute_dtype(dtype)
    floor = float(jnp.finfo(dtype).eps)  # of the input dtype, so bfloat16 behaves as it would
    x = cast(e, ct)
    unit = x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), floor))
    sim = jnp.einsum("if,jf->ij", unit, unit, precision=lax.Precision.HIGHEST)
    sim = sim / cast(temperature, ct)

    same = labels[:, None] == labels[None, :]
    positive = same & ~jnp.eye(e.shape[0], dtype=bool)
    negative = ~same
    has_negative = jnp.any(negative, axis=1, keepdims=True)
    # log Σ_{k ∈ N(i)} exp(S_ik), shifted by the row's largest negative; non-negatives are set
    # to that maximum before exp so nothing overflows, then dropped from the sum.
    top = jnp.max(jnp.where(negative, sim, -jnp.inf), axis=1, keepdims=True)
    top = lax.stop_gradient(jnp.where(has_negative, top, 0.0))
    shifted = jnp.where(negative, sim, top) - top
    total = jnp.sum(jnp.where(negative, jnp.exp(shifted), 0.0), axis=1, keepdims=True)
    log_negatives = top + jnp.log(jnp.where(has_negative, total, 1.0))
    pair = jax.nn.softplus(log_negatives - sim)
    pair = jnp.where(positive & has_negative, pair, 0.0)  # no negatives: the pair costs 0
    count = jnp.sum(positive).astype(ct)
    return cast(jnp.sum(pair) / jnp.maximum(count, 1.0), dtype)


def triplet_margin_loss(
    anchors: ArrayLike,
    positives: ArrayLike,
    negatives: ArrayLike,
    axis: int = -1,
    norm_degree: ArrayLike = 2,
    margin: ArrayLike = 1.0,
    eps: ArrayLike = 1e-6,
) -> jax.Array:
    """Triplet margin loss: the positive should be nearer the anchor than the negative by a margin.

    With the smoothed ``q``-norm distance ``d(x, y) = (Σ_k |x_k − y_k|^q + ε)^{1/q}`` along
    ``axis``::

        ℓ(a, p, n) = max(d(a, p) − d(a, n) + margin, 0)

    The distance is evaluated as ``m · (Σ_k (|x_k − y_k|/m)^q + ε/m^q)^{1/q}`` with ``m`` the
    larger of ``max_k |x_k − y_k|`` and ``ε^{1/q}``, so large inputs or degrees do not overflow.

    Args:
        anchors: ``[batch, features]`` real floating array.
        positives: embeddings that should be near the anchors, same shape.
        negatives: embeddings that should be far from the anchors, same shape.
        axis: the feature axis the distances are taken over.
        norm_degree: ``q ≥ 1`` (2: Euclidean distance, 1: Manhattan distance).
        margin: how much nearer the positive must be before the loss is 0.
        eps: ``ε ≥ 0`` added inside the root, keeping the gradient finite at zero distance.

    Returns:
        The loss of each triplet: the inputs' shape without ``axis``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.self_supervised import triplet_margin_loss
        >>> a = jnp.array([[0.0, 0.0], [1.0, 1.0]])
        >>> p = jnp.array([[0.1, 0.1], [1.1, 1.1]])
        >>> n = jnp.array([[1.0, 0.0], [0.0, 1.0]])
        >>> [round(float(v), 4) for v in triplet_margin_loss(a, p, n, margin=1.0)]
        [0.1414, 0.1414]

    Reference: Balntas et al., "Learning local feature descriptors with triplets and shallow
    convolutional neural networks", BMVC 2016.
    """
    fn = "triplet_margin_loss"
    check_range(fn, "norm_degree", norm_degree, low=1.0)
    check_range(fn, "margin", margin)
    check_range(fn, "eps", eps, low=0.0)
    a = _floating(fn, "anchors", anchors)
    p = _floating(fn, "positives", positives)
    n = _floating(fn, "negatives", negatives)
    shape = _check_broadcast(fn, {"anchors": a.shape, "positives": p.shape, "negatives": n.shape})
    if len(shape) == 0:
        raise ValueError(f"{fn}: the embeddings need a feature axis, got scalars")
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"{fn}: axis {axis} is out of range for embeddings of shape {shape}")
    return _triplet(a, p, n, norm_degree, margin, eps, axis=axis)


@_compiled("axis")
def _triplet(a, p, n, norm_degree, margin, eps, axis):
    shape = jnp.broadcast_shapes(a.shape, p.shape, n.shape)
    dtype = jnp.result_type(a, p, n)
    ct = compute_dtype(dtype)
    a, p, n = (jnp.broadcast_to(cast(x, ct), shape) for x in (a, p, n))
    q = cast(norm_degree, ct)
    e = cast(eps, ct)
    root_eps = e ** (1.0 / q)

    def distance(x, y):
        gap = jnp.abs(x - y)
        m = jnp.maximum(jnp.max(gap, axis=axis, keepdims=True), root_eps)
        m = lax.stop_gradient(jnp.where(m > 0, m, 1.0))  # the value does not depend on m
        inner = jnp.sum((gap / m) ** q, axis=axis)
        m = jnp.squeeze(m, axis)
        inner = inner + (root_eps / m) ** q
        # inner = 0 only for identical vectors with eps = 0: distance 0, gradient 0 (not NaN)
        positive = inner > 0
        return jnp.where(positive, m * jnp.where(positive, inner, 1.0) ** (1.0 / q), 0.0)

    loss = jnp.maximum(distance(a, p) - distance(a, n) + cast(margin, ct), 0.0)
    return cast(loss, dtype)
