"""Microbatching: evaluate a function on a large batch as a sequential loop over microbatches,
combining the results (sum, mean, running mean, concatenation), so peak memory is that of one
microbatch."""

from __future__ import annotations

import dataclasses
import enum
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.core import concrete_float

__all__ = ["microbatch", "Accumulator", "AccumulationType", "reshape_batch_axis"]


@dataclasses.dataclass(frozen=True)
class Accumulator:
    """How :func:`microbatch` combines the outputs ``y_0, …, y_{n−1}`` of the microbatches:

    .. code-block:: python

        carry = init(shape_dtype_of(y_0))
        for i in range(n):
            carry = update(carry, y_i, i)
        result = finalize(carry)

    Attributes:
        init: ``init(struct) -> carry`` from the shape and dtype (``jax.ShapeDtypeStruct``
            pytree) of one microbatch's output.
        update: ``update(carry, value, index) -> carry``.
        finalize: ``finalize(carry) -> result``.
        aggregate: ``aggregate(values) -> result`` for values stacked on a leading axis (the
            same reduction, done in one call).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> largest = gradtx.Accumulator(
        ...     init=lambda s: jnp.full(s.shape, -jnp.inf, s.dtype),
        ...     update=lambda c, v, i: jnp.maximum(c, v),
        ...     finalize=lambda c: c,
        ...     aggregate=lambda v: jnp.max(v, axis=0),
        ... )
        >>> f = gradtx.microbatch(jnp.max, 0, 2, largest)
        >>> float(f(jnp.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0])))
        9.0
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], Any]
    finalize: Callable[[Any], Any]
    aggregate: Callable[[Any], Any]


class AccumulationType(enum.Enum):
    """The built-in ways to combine microbatch outputs.

    ``SUM``: ``Σ_i y_i``. ``MEAN``: ``(1/n) Σ_i y_i`` with ``n`` the number of microbatches in
    the batch. ``RUNNING_MEAN``: the mean over the microbatches actually run (differs from
    ``MEAN`` when ``num_real_microbatches < n``). ``CONCAT``: the outputs concatenated back
    along axis 0 in the batch's original order. ``MEAN`` and ``RUNNING_MEAN`` need floating
    outputs.

    Example:
        >>> import gradtx
        >>> gradtx.AccumulationType.MEAN.name
        'MEAN'
    """

    MEAN = enum.auto()
    SUM = enum.auto()
    RUNNING_MEAN = enum.auto()
    CONCAT = enum.auto()


def reshape_batch_axis(tree: Any, microbatch_size: int, axis: int = 0) -> Any:
    """Split the batch axis of every leaf into ``(num_microbatches, microbatch_size)``.

    The split is column-major: microbatch ``i`` holds the examples ``i, i + n, i + 2n, …``
    (``n`` the number of microbatches), so a batch axis sharded in contiguous blocks stays
    sharded along the new ``microbatch_size`` axis.

    Args:
        tree: a pytree of arrays that share a batch axis.
        microbatch_size: the size of each microbatch (must divide the batch size).
        axis: the batch axis.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> gradtx.reshape_batch_axis(jnp.arange(6), 3).tolist()
        [[0, 2, 4], [1, 3, 5]]
    """

    def f(x):
        x = jnp.asarray(x)
        ax = axis % x.ndim if x.ndim else axis
        if x.ndim == 0 or x.shape[ax] % microbatch_size:
            raise ValueError(
                f"reshape_batch_axis: the batch axis {axis} of an array of shape {x.shape} "
                f"must have a size divisible by microbatch_size={microbatch_size}"
            )
        shape = x.shape[:ax] + (x.shape[ax] // microbatch_size, microbatch_size) + x.shape[ax + 1 :]
        return jnp.reshape(x, shape, order="F")

    return jax.tree_util.tree_map(f, tree)


def _leafwise(init, update, finalize, aggregate) -> Accumulator:
    """An :class:`Accumulator` applying per-array functions to every leaf of the outputs."""
    tm = jax.tree_util.tree_map
    return Accumulator(
        init=lambda s: tm(init, s),
        update=lambda c, v, i: tm(lambda c_, v_: update(c_, v_, i), c, v),
        finalize=lambda c: tm(finalize, c),
        aggregate=lambda v: tm(aggregate, v),
    )


def _zeros_floating(kind: str) -> Callable[[Any], jax.Array]:
    def init(s):
        if not jnp.issubdtype(s.dtype, jnp.floating):
            raise ValueError(
                f"microbatch: the {kind} accumulator needs floating outputs, got {s.dtype}"
            )
        return jnp.zeros(s.shape, s.dtype)

    return init


def _builtin(kind: AccumulationType, n: int) -> Accumulator:
    zeros = lambda s: jnp.zeros(s.shape, s.dtype)
    if kind is AccumulationType.SUM:
        return _leafwise(zeros, lambda c, v, i: c + v, lambda c: c, lambda v: jnp.sum(v, 0))
    if kind is AccumulationType.MEAN:
        return _leafwise(
            _zeros_floating("MEAN"),
            lambda c, v, i: c + v,
            lambda c: c / n,
            lambda v: jnp.mean(v, 0),
        )
    if kind is AccumulationType.RUNNING_MEAN:
        # m_i = m_{i−1} + (y_i − m_{i−1}) / (i + 1), written as a convex combination.
        def update(c, v, i):
            w = (i / (i + 1)).astype(c.dtype)
            return c * w + v * (1 - w)

        return _leafwise(
            _zeros_floating("RUNNING_MEAN"), update, lambda c: c, lambda v: jnp.mean(v, 0)
        )
    if kind is AccumulationType.CONCAT:

        def finalize(c):  # (n, m, ...) back to the batch order (n·m, ...), column-major
            return jnp.reshape(c, (-1,) + c.shape[2:], order="F")

        return _leafwise(
            lambda s: jnp.zeros((n,) + tuple(s.shape), s.dtype),
            lambda c, v, i: c.at[i].set(v),
            finalize,
            lambda v: v,
        )
    raise ValueError(f"microbatch: unknown accumulator {kind!r}")


def _resolve(accumulator: Any, n: int) -> Accumulator:
    """One :class:`Accumulator` for a pytree (a prefix of the outputs) of accumulators."""
    is_acc = lambda x: isinstance(x, Accumulator | AccumulationType)

    def one(a):
        if isinstance(a, Accumulator):
            return a
        if isinstance(a, AccumulationType):
            return _builtin(a, n)
        raise ValueError(
            f"microbatch: accumulator leaves must be Accumulator or AccumulationType, got {a!r}"
        )

    accs = jax.tree_util.tree_map(one, accumulator, is_leaf=is_acc)
    if isinstance(accs, Accumulator):
        return accs
    tm = lambda f, *trees: jax.tree_util.tree_map(f, accs, *trees, is_leaf=is_acc)
    return Accumulator(
        init=lambda s: tm(lambda a, s_: a.init(s_), s),
        update=lambda c, v, i: tm(lambda a, c_, v_: a.update(c_, v_, i), c, v),
        finalize=lambda c: tm(lambda a, c_: a.finalize(c_), c),
        aggregate=lambda v: tm(lambda a, v_: a.aggregate(v_), v),
    )


def microbatch(
    fun: Callable[..., Any],
    argnums: int | Sequence[int],
    microbatch_size: int | None,
    accumulator: Accumulator | AccumulationType | Any = AccumulationType.SUM,
    *,
    argnames: str | Sequence[str] = (),
    in_axes: int | Sequence[int] = 0,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable[..., Any]:
    """Turn ``fun`` into a function that runs it on microbatches one after another and
    combines their outputs.

    The batch arguments (positions ``argnums`` and keywords ``argnames``, each with its batch
    axis in ``in_axes``) are split into ``n = B / m`` microbatches of ``m = microbatch_size``
    examples (microbatch ``i`` holds examples ``i, i + n, i + 2n, …``, see
    :func:`reshape_batch_axis`); ``fun`` is evaluated on each in a ``lax.fori_loop`` and its
    outputs ``y_i`` combined by ``accumulator``. For ``SUM``:

    .. math::
        \\text{microbatch}(f)(x) = \\sum_{i=0}^{n-1} f(x^{(i)}),

    which equals ``f(x)`` when ``f`` is a sum over examples (a summed loss, its gradient),
    at the memory cost of one microbatch.

    Args:
        fun: the function to evaluate.
        argnums: the position(s) of the arguments that carry a batch axis.
        microbatch_size: ``m``, examples per microbatch (must divide the batch size);
            ``None`` returns ``fun`` itself.
        accumulator: an :class:`AccumulationType`, an :class:`Accumulator`, or a pytree of them
            that is a prefix of ``fun``'s output (one per output subtree).
        argnames: the keyword argument(s) that carry a batch axis.
        in_axes: the batch axis of each of ``argnums + argnames`` (one int for all).
        num_real_microbatches: run only the first this many microbatches (may be traced:
            variable batch sizes without recompiling).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> fun = lambda x: (x + 1, jnp.sum(3 * x))
        >>> kinds = (gradtx.AccumulationType.CONCAT, gradtx.AccumulationType.SUM)
        >>> y, s = gradtx.microbatch(fun, argnums=0, microbatch_size=2, accumulator=kinds)(
        ...     jnp.array([1, 2, 3, 4]))
        >>> y.tolist(), int(s)
        ([2, 3, 4, 5], 30)

    Reference: Huang et al., "GPipe: Efficient Training of Giant Neural Networks using
    Pipeline Parallelism", NeurIPS 2019 (micro-batches); optax's ``microbatch``.
    """
    if microbatch_size is None:
        return fun
    if (
        isinstance(microbatch_size, bool)
        or not isinstance(microbatch_size, numbers.Integral)
        or microbatch_size < 1
    ):
        raise ValueError(
            f"microbatch: microbatch_size must be an int >= 1 or None, got {microbatch_size!r}"
        )
    argnums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    argnames = (argnames,) if isinstance(argnames, str) else tuple(argnames)
    n_batched = len(argnums) + len(argnames)
    in_axes = (in_axes,) * n_batched if isinstance(in_axes, int) else tuple(in_axes)
    if len(in_axes) != n_batched:
        raise ValueError(
            f"microbatch: in_axes must have one axis per batch argument ({n_batched}), got "
            f"{in_axes!r}"
        )
    if n_batched == 0:
        raise ValueError("microbatch: argnums and argnames name no batch argument")
    m = int(microbatch_size)

    def microbatched(*args, **kwargs):
        for i in argnums:
            if not -len(args) <= i < len(args):
                raise ValueError(
                    f"microbatch: argnums has {i}, but the function got {len(args)} positional "
                    "arguments"
                )
        for k in argnames:
            if k not in kwargs:
                raise ValueError(f"microbatch: argnames has {k!r}, not among the keywords")
        batched = [args[i] for i in argnums] + [kwargs[k] for k in argnames]
        sizes = [
            jnp.shape(x)[ax]
            for tree, ax in zip(batched, in_axes, strict=True)
            for x in jax.tree_util.tree_leaves(tree)
        ]
        if not sizes:
            raise ValueError("microbatch: the batch arguments hold no arrays")
        if len(set(sizes)) > 1:
            raise ValueError(f"microbatch: the batch axes differ in size: {sizes}")
        if sizes[0] % m:
            raise ValueError(
                f"microbatch: the batch size {sizes[0]} is not divisible by microbatch_size={m}"
            )
        n = sizes[0] // m
        split = [reshape_batch_axis(t, m, ax) for t, ax in zip(batched, in_axes, strict=True)]
        axes = list(in_axes)

        def call(index):
            new_args, new_kwargs = list(args), dict(kwargs)
            # The microbatch axis sits where the batch axis was (one further left if negative).
            pick = [
                jax.tree_util.tree_map(
                    lambda x, ax=ax: jnp.take(x, index, axis=ax if ax >= 0 else ax - 1), t
                )
                for t, ax in zip(split, axes, strict=True)
            ]
            for j, i in enumerate(argnums):
                new_args[i] = pick[j]
            for j, k in enumerate(argnames):
                new_kwargs[k] = pick[len(argnums) + j]
            return fun(*new_args, **new_kwargs)

        k = concrete_float(num_real_microbatches)
        if k is not None and not (0 <= k <= n and float(k).is_integer()):
            raise ValueError(
                f"microbatch: num_real_microbatches must be an integer in [0, {n}], got "
                f"{num_real_microbatches!r}"
            )
        acc = _resolve(accumulator, n)
        carry = acc.init(jax.eval_shape(call, 0))
        steps = n if num_real_microbatches is None else num_real_microbatches
        carry = jax.lax.fori_loop(0, steps, lambda i, c: acc.update(c, call(i), i), carry)
        return acc.finalize(carry)

    return microbatched
