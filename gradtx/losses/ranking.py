"""Ranking losses: the cost of the order that item scores induce, compared with relevance labels.

The last axis of the inputs holds a list of items; leading axes are a batch of lists.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from gradtx.losses.regression import _check_broadcast, _compiled, _floating
from gradtx.numerics import cast, compute_dtype

__all__ = ["ranking_softmax_loss"]


def ranking_softmax_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    reduce_fn: Callable[..., ArrayLike] | None = jnp.mean,
) -> jax.Array:
    """Softmax (listwise cross-entropy) ranking loss.

    For one list with scores ``s``, relevance labels ``y`` and item weights ``w`` (1 if none)::

        ℓ(s, y) = −Σ_i w_i y_i log softmax(s)_i,   softmax(s)_i = exp(s_i) / Σ_j exp(s_j)

    where both sums run over the list's valid items only (``where`` true): a masked item takes
    no part in the normalisation and adds nothing. The per-list losses are then reduced by
    ``reduce_fn`` over the lists that have at least one valid item; with the default
    :func:`jax.numpy.mean`, a batch in which every list is masked gives 0, not NaN.

    Args:
        logits: scores ``[..., list_size]``, real floating.
        labels: relevance labels, broadcastable with ``logits``.
        where: boolean mask of the valid items, broadcastable with ``logits``.
        weights: per-item weights, broadcastable with ``logits``.
        reduce_fn: called as ``reduce_fn(losses, where=valid_lists)`` (e.g. ``jnp.mean``,
            ``jnp.sum``); ``None`` returns the per-list losses, 0 for lists with no valid item.

    Returns:
        The reduced loss, or the loss of each list (shape ``[...]``) when ``reduce_fn=None``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.ranking import ranking_softmax_loss
        >>> scores = jnp.array([[2.0, 1.0, 3.0], [1.0, 0.5, 1.5]])
        >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        >>> [round(float(v), 4) for v in ranking_softmax_loss(scores, labels, reduce_fn=None)]
        [1.4076, 0.6803]
        >>> where = jnp.array([[True, True, False], [True, True, True]])
        >>> round(float(ranking_softmax_loss(scores, labels, where=where)), 4)
        0.4968

    Reference: Cao et al., "Learning to Rank: From Pairwise Approach to Listwise Approach",
    ICML 2007; Bruch et al., "An Analysis of the Softmax Cross Entropy Loss for
    Learning-to-Rank with Binary Relevance", ICTIR 2019.
    """
    fn = "ranking_softmax_loss"
    s = _floating(fn, "logits", logits)
    y = jnp.asarray(labels)
    shapes = {"logits": s.shape, "labels": y.shape}
    if where is not None:
        where = jnp.asarray(where, dtype=bool)
        shapes["where"] = where.shape
    if weights is not None:
        weights = jnp.asarray(weights)
        shapes["weights"] = weights.shape
    shape = _check_broadcast(fn, shapes)
    if len(shape) == 0:
        raise ValueError(f"{fn}: logits must have a list axis (at least 1 dimension), got ()")
    losses, lists = _list_losses(s, y, where, weights)
    # The reduction runs outside the compiled part: reduce_fn may be any function.
    if reduce_fn is None:
        out = losses  # a list with no valid item already has loss 0
    elif reduce_fn is jnp.mean and lists is not None:
        count = jnp.maximum(jnp.sum(lists), 1).astype(losses.dtype)
        out = jnp.sum(jnp.where(lists, losses, 0.0)) / count
    else:
        out = reduce_fn(losses, where=lists)
    return cast(out, s.dtype)


@_compiled()
def _list_losses(s, y, where, weights):
    """The loss of every list (in the compute dtype) and which lists have a valid item."""
    shape = jnp.broadcast_shapes(
        s.shape, y.shape, *(x.shape for x in (where, weights) if x is not None)
    )
    dtype = s.dtype
    ct = compute_dtype(dtype)
    s = jnp.broadcast_to(cast(s, ct), shape)
    y = jnp.broadcast_to(cast(y, ct), shape)
    if weights is not None:
        y = y * cast(weights, ct)
    valid = jnp.ones(shape, bool) if where is None else jnp.broadcast_to(where, shape)

    # log softmax over the valid items; masked items are replaced by the list's maximum so no
    # inf or NaN is formed (not even in the gradient), then excluded from every sum.
    top = jnp.max(jnp.where(valid, s, -jnp.inf), axis=-1, keepdims=True)
    top = lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    s = jnp.where(valid, s, top)
    total = jnp.sum(jnp.where(valid, jnp.exp(s - top), 0.0), axis=-1, keepdims=True)
    log_softmax = s - (top + jnp.log(jnp.where(total > 0, total, 1.0)))
    losses = -jnp.sum(jnp.where(valid, y * log_softmax, 0.0), axis=-1)

    return losses, (None if where is None else jnp.any(valid, axis=-1))
