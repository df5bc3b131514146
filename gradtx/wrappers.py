"""Wrappers users expect from optax: conditional application, flattening, gradient
centralization, non-negative parameters, and a monitor that logs norms in the state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradtx import numerics as tree_lib
from gradtx.core import (
    EmptyState,
    GradientTransformation,
    _as_member,
    identity,
    static_field,
    transform,
)

__all__ = [
    "conditionally_transform",
    "ConditionallyTransformState",
    "conditionally_mask",
    "ConditionallyMaskState",
    "flatten",
    "centralize",
    "keep_params_nonnegative",
    "monitor",
    "MonitorState",
]


def _cond(pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
    if isinstance(pred, jax.core.Tracer):
        return jax.lax.cond(pred, true_fn, false_fn)
    return true_fn() if bool(pred) else false_fn()


@dataclasses.dataclass(frozen=True, repr=False)
class _Conditional(GradientTransformation):
    """Fields and checks shared by the wrappers that apply ``inner`` only on some steps."""

    inner: Any
    should_transform_fn: Callable[..., Any] = static_field()
    forward_extra_args: bool = static_field(False)

    def _check(self):
        object.__setattr__(self, "inner", _as_member(self.inner))
        if not callable(self.should_transform_fn):
            raise TypeError(
                f"{type(self).__name__}: should_transform_fn must be callable, "
                f"got {self.should_transform_fn!r}"
            )

    def _predicate(self, step: jax.Array, extra_args: dict) -> Any:
        if self.forward_extra_args:
            return self.should_transform_fn(step, **extra_args)
        return self.should_transform_fn(step)


class ConditionallyTransformState(NamedTuple):
    """The inner state and the number of calls so far (the predicate's argument)."""

    inner_state: Any
    step: jax.Array


@transform
class conditionally_transform(_Conditional):
    """Apply ``inner`` on the steps where ``should_transform_fn(step)`` is true; elsewhere pass
    the updates through unchanged and leave the inner state alone.

    Args:
        inner: the transform to apply conditionally (gradtx or optax).
        should_transform_fn: a function of the int32 call count ``step = 0, 1, …`` (and of the
            extra arguments when ``forward_extra_args``) returning a bool.
        forward_extra_args: also pass ``update``'s extra keyword arguments to the predicate.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.conditionally_transform(gradtx.scale(10.0), lambda step: step >= 1)
        >>> s = tx.init(jnp.zeros(1))
        >>> u0, s = tx.update(jnp.ones(1), s)
        >>> u1, s = tx.update(jnp.ones(1), s)
        >>> u0.tolist(), u1.tolist()
        ([1.0], [10.0])
    """

    def init(self, params):
        return ConditionallyTransformState(
            inner_state=self.inner.init(params), step=jnp.zeros([], jnp.int32)
        )

    def update(self, updates, state, params=None, **extra_args):
        pred = self._predicate(state.step, extra_args)

        def do_update():
            new, inner = self.inner.update(updates, state.inner_state, params, **extra_args)
            return tree_lib.tree_cast_like(new, updates), inner

        new, inner = _cond(pred, do_update, lambda: (updates, state.inner_state))
        return new, ConditionallyTransformState(
            inner_state=inner, step=tree_lib.safe_increment(state.step)
        )


class ConditionallyMaskState(NamedTuple):
    """The number of calls so far (the predicate's argument) and the inner state."""

    step: jax.Array
    inner_state: Any


@transform
class conditionally_mask(_Conditional):
    """Apply ``inner`` where ``should_transform_fn(step)`` is true; elsewhere output zeros
    (the parameters do not move) and leave the inner state alone.

    Args:
        inner: the transform (gradtx or optax).
        should_transform_fn: a function of the int32 call count returning a bool.
        forward_extra_args: also pass ``update``'s extra keyword arguments to the predicate.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.conditionally_mask(gradtx.sgd(1.0), lambda step: step % 2 == 1)
        >>> s = tx.init(jnp.zeros(1))
        >>> u0, s = tx.update(jnp.ones(1), s)
        >>> u1, s = tx.update(jnp.ones(1), s)
        >>> u0.tolist(), u1.tolist()
        ([0.0], [-1.0])
    """

    def init(self, params):
        return ConditionallyMaskState(
            step=jnp.zeros([], jnp.int32), inner_state=self.inner.init(params)
        )

    def update(self, updates, state, params=None, **extra_args):
        pred = self._predicate(state.step, extra_args)

        def do_update():
            return self.inner.update(updates, state.inner_state, params, **extra_args)

        def skip():  # zeros shaped like what the inner transform would output
            return tree_lib.tree_zeros_like_output(do_update)[0], state.inner_state

        new, inner = _cond(pred, do_update, skip)
        return new, ConditionallyMaskState(
            step=tree_lib.safe_increment(state.step), inner_state=inner
        )


def _ravel(tree: Any) -> jax.Array:
    return ravel_pytree(tree)[0]


@transform
class flatten(GradientTransformation):
    """Run ``inner`` on one vector holding every parameter (the leaves raveled and
    concatenated), then split its output back into the tree.

    Useful for transforms that are cheaper on one large array than on many small ones. The
    state is ``inner``'s state for the flat vector.

    Args:
        inner: the transform (gradtx or optax).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.flatten(gradtx.scale_by_adam())
        >>> p = {"a": jnp.zeros(2), "b": jnp.zeros((1, 3))}
        >>> tx.init(p).mu.shape
        (5,)
    """

    inner: Any

    def _check(self):
        object.__setattr__(self, "inner", _as_member(self.inner))

    def init(self, params):
        return self.inner.init(_ravel(params))

    def update(self, updates, state, params=None, **extra_args):
        flat, unravel = ravel_pytree(updates)
        flat_params = None if params is None else _ravel(params)
        new, state = self.inner.update(flat, state, flat_params, **extra_args)
        return unravel(new), state


@transform
class centralize(GradientTransformation):
    """Gradient centralization (Yong et al., 2020): for each leaf with ``ndim > 1`` subtract
    its mean over every axis but the first, ``u ← u − mean_{axes 1..}(u)``; vectors and
    scalars pass unchanged.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> u, _ = gradtx.centralize().update(jnp.array([[1.0, 3.0], [0.0, 4.0]]), None)
        >>> u.tolist()
        [[-1.0, 1.0], [-2.0, 2.0]]

    Reference: Yong, Huang, Hua & Zhang, "Gradient Centralization: A New Optimization
    Technique for Deep Neural Networks", ECCV 2020.
    """

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        def f(u):
            if u is None or jnp.ndim(u) <= 1:
                return u
            axes = tuple(range(1, jnp.ndim(u)))
            return (u - jnp.mean(u, axis=axes, keepdims=True)).astype(jnp.result_type(u))

        return jax.tree_util.tree_map(f, updates, is_leaf=lambda x: x is None), state


@transform
class keep_params_nonnegative(GradientTransformation):
    """Keep parameters ``θ >= 0``: where ``θ + u < 0`` replace the update by ``−θ`` (the
    parameter lands on zero). Place it last in a chain; needs ``params``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.keep_params_nonnegative()
        >>> u, _ = tx.update(jnp.array([-3.0, -0.5]), None, jnp.array([1.0, 1.0]))
        >>> u.tolist()
        [-1.0, -0.5]
    """

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                "keep_params_nonnegative: update needs params (call update(updates, state, params))"
            )
        tree_lib.check_structure(updates, params, "keep_params_nonnegative", "updates", "params")
        out = jax.tree_util.tree_map(
            lambda u, p: jnp.where(p + u < 0, -p, u).astype(jnp.result_type(u)), updates, params
        )
        return out, state


class MonitorState(NamedTuple):
    """Global norms seen on the last step (for logging) and the wrapped transform's state.

    ``grad_norm``: ``||g||`` of the updates coming in; ``update_norm``: ``||u||`` of the
    updates going out; ``measurements``: ``{name: fn(g)}`` for the extra ``measures`` (of the
    incoming updates); ``count``: steps seen.
    """

    count: jax.Array
    grad_norm: jax.Array
    update_norm: jax.Array
    measurements: Any
    inner_state: Any


@transform
class monitor(GradientTransformation):
    """Record the global norms of the incoming and outgoing updates in the state, for logging.

    ``monitor(opt)`` wraps a whole optimizer (``grad_norm`` is the gradient's norm,
    ``update_norm`` the parameter step's); ``monitor()`` with no inner transform can be inserted
    anywhere in a chain and records the norm of what passes through (both fields equal). The
    updates are not changed and the chain is not split: read the numbers from the state.

    Args:
        inner: the transform to wrap (default :class:`gradtx.identity`).
        measures: extra ``{name: fn}`` measurements of the incoming updates (each ``fn`` maps
            the updates to an array of fixed shape), kept in ``state.measurements``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.monitor(gradtx.sgd(0.1), measures={"max": lambda g: jnp.max(g)})
        >>> u, s = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
        >>> round(float(s.grad_norm), 4), round(float(s.update_norm), 4)
        (5.0, 0.5)
        >>> float(s.measurements["max"])
        4.0
    """

    inner: Any = None
    measures: Any = static_field(None)

    def _check(self):
        inner = identity() if self.inner is None else self.inner
        object.__setattr__(self, "inner", _as_member(inner))
        if self.measures is not None:
            if not isinstance(self.measures, dict) or not all(
                isinstance(k, str) and callable(f) for k, f in self.measures.items()
            ):
                raise TypeError(
                    f"monitor: measures must be a dict {{name: function}}, got {self.measures!r}"
                )
            object.__setattr__(self, "measures", _FrozenDict(self.measures))

    def _measure(self, updates: Any) -> dict:
        return {k: jnp.asarray(f(updates)) for k, f in (self.measures or {}).items()}

    def init(self, params):
        zero = jnp.zeros([], jnp.float32)
        measurements = jax.tree_util.tree_map(
            lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(self._measure, params)
        )
        return MonitorState(
            count=jnp.zeros([], jnp.int32),
            grad_norm=zero,
            update_norm=zero,
            measurements=measurements,
            inner_state=self.inner.init(params),
        )

    def update(self, updates, state, params=None, **extra_args):
        new, inner = self.inner.update(updates, state.inner_state, params, **extra_args)
        dtype = state.grad_norm.dtype
        measurements = jax.tree_util.tree_map(
            lambda x, old: x.astype(old.dtype), self._measure(updates), state.measurements
        )
        return new, MonitorState(
            count=tree_lib.safe_increment(state.count),
            grad_norm=tree_lib.global_norm(updates).astype(dtype),
            update_norm=tree_lib.global_norm(new).astype(dtype),
            measurements=measurements,
            inner_state=inner,
        )


@jax.tree_util.register_static
class _FrozenDict(dict):
    """A dict of functions held in the treedef (hashable by its items' identities)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((k, id(v)) for k, v in self.items())))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, dict)
            and self.keys() == other.keys()
            and all(self[k] is other[k] for k in self)
        )

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)
