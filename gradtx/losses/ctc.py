"""Connectionist temporal classification (CTC): the loss of a label sequence given per-frame
class scores, summed over every alignment of the labels to the frames.

An alignment is a sequence of one symbol per frame, drawn from the classes plus a *blank*, that
collapses to the labels when repeated symbols are merged and blanks removed (``a a - b - b``
gives ``a b b``). The forward algorithm sums the probabilities of all alignments in
``O(T · N)`` per sequence, in log space, with one :func:`jax.lax.scan` over the frames.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from gradtx.core import check_range
from gradtx.losses.regression import _compiled, _floating
from gradtx.numerics import cast, compute_dtype

__all__ = ["ctc_loss", "ctc_loss_with_forward_probs"]


def _shape(x: ArrayLike) -> tuple[int, ...]:
    return tuple(jnp.shape(x))


def _check_inputs(fn, logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon):
    logits = _floating(fn, "logits", logits)
    if logits.ndim != 3:
        raise ValueError(f"{fn}: logits must be [batch, frames, classes], got {logits.shape}")
    batch, frames, classes = logits.shape
    if frames == 0:
        raise ValueError(f"{fn}: logits must have at least one frame, got shape {logits.shape}")
    if _shape(logit_paddings) != (batch, frames):
        raise ValueError(
            f"{fn}: logit_paddings must have shape {(batch, frames)} (logits' batch and "
            f"frames), got {_shape(logit_paddings)}"
        )
    if len(_shape(labels)) != 2 or _shape(labels)[0] != batch:
        raise ValueError(f"{fn}: labels must have shape ({batch}, N), got {_shape(labels)}")
    if _shape(label_paddings) != _shape(labels):
        raise ValueError(
            f"{fn}: label_paddings must have the shape of labels {_shape(labels)}, "
            f"got {_shape(label_paddings)}"
        )
    try:
        blank = operator.index(blank_id)
    except TypeError:
        raise TypeError(f"{fn}: blank_id must be an int, got {blank_id!r}") from None
    if not 0 <= blank < classes:
        raise ValueError(f"{fn}: blank_id must be in [0, {classes}), got {blank_id!r}")
    check_range(fn, "log_epsilon", log_epsilon, high=0.0, high_open=True)
    return logits, blank


def _forward(fn, logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon):
    logits, blank_id = _check_inputs(
        fn, logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon
    )
    return _recursion(
        logits, logit_paddings, labels, label_paddings, log_epsilon, blank_id=blank_id
    )


@_compiled("blank_id")
def _recursion(logits, logit_paddings, labels, label_paddings, log_epsilon, blank_id):
    batch, _, classes = logits.shape
    n_labels = _shape(labels)[1]
    ct = compute_dtype(logits.dtype)
    zero = cast(log_epsilon, ct)  # stands for log 0: keeps every sum of logs finite
    labels = jnp.asarray(labels)
    label_lengths = n_labels - jnp.sum(jnp.asarray(label_paddings), axis=1).astype(jnp.int32)
    padded = jnp.asarray(logit_paddings) != 0  # [B, T]

    log_probs = jax.nn.log_softmax(cast(logits, ct), axis=-1)  # [B, T, K]
    log_blank = log_probs[:, :, blank_id]  # [B, T]
    index = jnp.clip(labels.astype(jnp.int32), 0, classes - 1)
    log_label = jnp.take_along_axis(log_probs, index[:, None, :], axis=2)  # [B, T, N]
    # Going straight from label n-1 to label n (no blank between) is allowed only when the two
    # labels differ; a repeated label must be separated by a blank.
    skip = jnp.where(labels[:, 1:] == labels[:, :-1], zero, 0.0).astype(ct)  # [B, N-1]

    def step(carry, frame):
        # blank[n]: log-prob. of the frames so far emitting the first n labels and ending in a
        # blank; label[n]: ... emitting the first n+1 labels and ending on label n.
        blank, label = carry
        lp_blank, lp_label, pad = frame
        # A blank follows the blank before it, or the label it closes.
        new_blank = (
            jnp.concatenate([blank[:, :1], jnp.logaddexp(blank[:, 1:], label)], axis=1)
            + lp_blank[:, None]
        )
        # Label n follows itself, the blank before it, or (if different) label n-1.
        enter = jnp.concatenate(
            [blank[:, :1], jnp.logaddexp(blank[:, 1:n_labels], label[:, :-1] + skip)], axis=1
        )[:, :n_labels]
        new_label = jnp.logaddexp(enter, label) + lp_label
        # A padded frame leaves the state as it was.
        new_blank = jnp.where(pad[:, None], blank, new_blank)
        new_label = jnp.where(pad[:, None], label, new_label)
        return (new_blank, new_label), (new_blank, new_label)

    init_blank = jnp.full((batch, n_labels + 1), zero, ct).at[:, 0].set(0.0)
    init_label = jnp.full((batch, n_labels), zero, ct)
    frames = (log_blank.T, jnp.transpose(log_label, (1, 0, 2)), padded.T)
    (last_blank, last_label), (alpha_blank, alpha_label) = lax.scan(
        step, (init_blank, init_label), frames
    )
    # After the last frame, "n labels emitted" may end on a blank or on label n itself.
    done = jnp.concatenate(
        [last_blank[:, :1], jnp.logaddexp(last_blank[:, 1:], last_label)], axis=1
    )
    alpha_blank = alpha_blank.at[-1].set(done)
    loss = -jnp.take_along_axis(done, label_lengths[:, None], axis=1)[:, 0]
    return loss, alpha_blank, alpha_label


def ctc_loss_with_forward_probs(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: ArrayLike = -1e5,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """CTC loss of each sequence, with the forward (alpha) log-probabilities it was summed from.

    With ``y_t = softmax(logits_t)`` and the labels ``l_1..l_N`` (blank written ``∅``), the
    forward variables after frame ``t`` are::

        α_∅(t, n) = y_t(∅) · [α_∅(t−1, n) + α_l(t−1, n)]
        α_l(t, n) = y_t(l_n) · [α_l(t−1, n) + α_∅(t−1, n−1) + α_l(t−1, n−1)·(l_n ≠ l_{n−1})]

    ``α_∅(t, n)``: the first ``t`` frames emit ``l_1..l_n`` and frame ``t`` is a blank;
    ``α_l(t, n)``: they emit ``l_1..l_n`` and frame ``t`` is ``l_n``. Before the first frame only
    "nothing emitted" is possible. The loss is ``−log p(l | x) = −log(α_∅(T, N) + α_l(T, N))``.
    Padded frames leave the state unchanged; ``log 0`` is represented by ``log_epsilon``.
    Half-precision logits are computed, and the results returned, in float32 (as in optax).

    Args:
        logits: ``[B, T, K]`` unnormalised class scores per frame (``K`` includes the blank).
        logit_paddings: ``[B, T]``, 1 for padded frames and 0 for real ones.
        labels: ``[B, N]`` integer labels, right-padded.
        label_paddings: ``[B, N]``, 1 for padded labels and 0 for real ones (each row zeros
            followed by ones).
        blank_id: the class index of the blank.
        log_epsilon: a large negative number standing in for ``log 0``.

    Returns:
        ``(loss, log_alpha_blank, log_alpha_label)``: ``loss`` is ``[B]``; ``log_alpha_blank``
        is ``[T, B, N + 1]`` with entry ``[t, b, n] = log α_∅(t+1, n)``, except that the last
        frame holds ``log(α_∅ + α_l)(T, n)`` (the probability of ``l_1..l_n`` in total);
        ``log_alpha_label`` is ``[T, B, N]`` with entry ``[t, b, n] = log α_l(t+1, n+1)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.ctc import ctc_loss_with_forward_probs
        >>> logits = jnp.zeros((1, 3, 3))  # uniform over {blank, 1, 2} at each of 3 frames
        >>> loss, a_blank, a_label = ctc_loss_with_forward_probs(
        ...     logits, jnp.zeros((1, 3)), jnp.array([[1, 2]]), jnp.zeros((1, 2)))
        >>> round(float(jnp.exp(-loss[0]) * 27), 4)  # 5 of the 27 alignments give "1 2"
        5.0
        >>> a_blank.shape, a_label.shape
        ((3, 1, 3), (3, 1, 2))

    Reference: Graves et al., "Connectionist Temporal Classification: Labelling Unsegmented
    Sequence Data with Recurrent Neural Networks", ICML 2006.
    """
    return _forward(
        "ctc_loss_with_forward_probs",
        logits,
        logit_paddings,
        labels,
        label_paddings,
        blank_id,
        log_epsilon,
    )


def ctc_loss(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: ArrayLike = -1e5,
) -> jax.Array:
    """CTC loss of each sequence: ``−log p(labels | logits)`` summed over all alignments.

    See :func:`ctc_loss_with_forward_probs` for the recursion and the conventions.

    Args:
        logits: ``[B, T, K]`` unnormalised class scores per frame (``K`` includes the blank).
        logit_paddings: ``[B, T]``, 1 for padded frames and 0 for real ones.
        labels: ``[B, N]`` integer labels, right-padded.
        label_paddings: ``[B, N]``, 1 for padded labels and 0 for real ones.
        blank_id: the class index of the blank.
        log_epsilon: a large negative number standing in for ``log 0``.

    Returns:
        The ``[B]`` losses.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.losses.ctc import ctc_loss
        >>> logits = jnp.zeros((1, 3, 3))
        >>> loss = ctc_loss(logits, jnp.zeros((1, 3)), jnp.array([[1, 1]]), jnp.zeros((1, 2)))
        >>> round(float(jnp.exp(-loss[0]) * 27), 4)  # only "1 ∅ 1" gives "1 1"
        1.0

    Reference: Graves et al., "Connectionist Temporal Classification: Labelling Unsegmented
    Sequence Data with Recurrent Neural Networks", ICML 2006.
    """
    return _forward(
        "ctc_loss", logits, logit_paddings, labels, label_paddings, blank_id, log_epsilon
    )[0]
