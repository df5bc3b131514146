"""Wrappers users expect from optax: conditional application, flattening, gradient
centralization, non-negative parameters, and monitoring: ``snapshot`` and ``monitor`` record
measurements of the updates in the state (optax's), ``monitor_norms`` records the gradient and
update norms of a wrapped optimizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradtx import numerics as tree_lib
from gradtx.core import (
    EmptyState,
    GradientTransformation,
    _as_member,
    check_dtype,
    check_range,
    identity,
    static_field,
    transform,
)
from gradtx.safe_math import _split_in_type
from gradtx.transforms.momentum import EmaState

__all__ = [
    "ConditionFn",
    "conditionally_transform",
    "ConditionallyTransformState",
    "conditionally_mask",
    "ConditionallyMaskState",
    "flatten",
    "centralize",
    "keep_params_nonnegative",
    "NonNegativeParamsState",
    "snapshot",
    "SnapshotState",
    "monitor",
    "MonitorState",
    "measure_with_ema",
    "monitor_norms",
    "MonitorNormsState",
]


class ConditionFn(Protocol):
    """The type of ``should_transform_fn`` in :class:`conditionally_transform` and
    :class:`conditionally_mask`: ``fn(step, **extra_args) -> bool``.

    ``step`` is the int32 number of calls so far; the extra keyword arguments of ``update``
    are passed only with ``forward_extra_args=True``.

    Example:
        >>> import gradtx
        >>> def every_other(step, **extra_args):
        ...     return step % 2 == 0
        >>> tx = gradtx.conditionally_mask(gradtx.sgd(1.0), every_other)
    """

    def __call__(self, step: jax.Array, **extra_args: Any) -> Any:
        """Whether the inner transform runs at this step."""


NonNegativeParamsState = EmptyState
"""State of :class:`keep_params_nonnegative` (optax's name): it keeps nothing."""


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
    return _ravel_with_unravel(tree)[0]


def _ravel_with_unravel(tree: Any) -> tuple[jax.Array, Any]:
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _split_in_type(x):
            raise TypeError(
                f"flatten: the leaf at {jax.tree_util.keystr(path)} is sharded over an Explicit "
                f"mesh axis ({jax.typeof(x)}); one vector of every parameter would have to be "
                "gathered on each device. Use the inner transform without flatten, or a mesh "
                "with Auto axes"
            )
    return ravel_pytree(tree)


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

    _state_is_inner = True  # its state is the inner transform's (see gradtx.hyperparams)

    inner: Any

    def _check(self):
        object.__setattr__(self, "inner", _as_member(self.inner))

    def init(self, params):
        return self.inner.init(_ravel(params))

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, params, "flatten", "updates", "params")
        flat, unravel = _ravel_with_unravel(updates)
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
        for p in jax.tree_util.tree_leaves(params):
            if jnp.iscomplexobj(p):
                raise TypeError(
                    "keep_params_nonnegative: complex parameters have no sign to keep, got "
                    f"dtype {jnp.result_type(p)}"
                )
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


class SnapshotState(NamedTuple):
    """The last measurement of :class:`snapshot`, as ``{measure_name: value}``."""

    measurement: dict


@transform
class snapshot(GradientTransformation):
    """Record ``measure(updates)`` in the state under ``measure_name``; the updates pass
    through unchanged.

    Placed in a chain it sees the updates as transformed by the members before it, e.g. the
    norm before clipping. ``init`` records ``measure(params)``. Read the value with
    ``gradtx.tree.get(state, measure_name)`` or ``state.measurement[measure_name]``.

    Args:
        measure_name: the name the measurement is kept under.
        measure: a function of the updates returning arrays (of fixed shapes).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.chain(
        ...     gradtx.snapshot("norm_before_clip", gradtx.tree.norm),
        ...     gradtx.clip_by_global_norm(1.0),
        ... )
        >>> u, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
        >>> float(state[0].measurement["norm_before_clip"]), u.tolist()
        (5.0, [0.6000000238418579, 0.800000011920929])
    """

    measure_name: str = static_field()
    measure: Callable[[Any], Any] = static_field()

    def _check(self):
        if not isinstance(self.measure_name, str):
            raise TypeError(f"snapshot: measure_name must be a str, got {self.measure_name!r}")
        if not callable(self.measure):
            raise TypeError(f"snapshot: measure must be callable, got {self.measure!r}")

    def init(self, params):
        return SnapshotState(measurement={self.measure_name: self.measure(params)})

    def update(self, updates, state, params=None, **extra_args):
        return updates, SnapshotState(measurement={self.measure_name: self.measure(updates)})


@transform
class _Measure(GradientTransformation):
    """A function of the updates as a stateless transform whose output is the measurement."""

    fn: Callable[[Any], Any] = static_field()

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        return self.fn(updates), state


class MonitorState(NamedTuple):
    """State of :class:`monitor`: the last measurements ``{name: value}`` and, in the order the
    measures were given, the state of each measure."""

    measurements: dict
    measure_states: tuple


@transform
class monitor(GradientTransformation):
    """Record measurements of the updates in the state; the updates pass through unchanged.

    Each measure is a function of the updates (``gradtx.tree.norm``) or a transform whose
    output is the measurement and which may keep a state (:class:`measure_with_ema`, which
    averages a measurement over steps). On every update ``state.measurements[name]`` is the
    measure's value for the updates that reached this point of the chain (and the extra
    keyword arguments of ``update`` are passed to the transforms). Same arguments and state
    as optax's ``monitor``; to record the gradient and update norms of a whole optimizer, see
    :class:`monitor_norms`.

    Unlike optax, whose ``init`` leaves ``measurements`` empty until the first update,
    ``init`` fills it with zeros shaped like each measurement (when the measure can be
    evaluated on the params), so the state keeps one structure from the start: a jitted step
    compiles once and ``lax.scan`` loops over it.

    Args:
        measures: ``{name: function or transform}``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> clipped = lambda u: gradtx.tree.norm(u) > 1.0
        >>> tx = gradtx.chain(
        ...     gradtx.monitor({
        ...         "norm": gradtx.tree.norm,
        ...         "clipped_ema": gradtx.measure_with_ema(clipped, 0.9),
        ...     }),
        ...     gradtx.clip_by_global_norm(1.0),
        ... )
        >>> state = tx.init(jnp.zeros(2))
        >>> for g in [jnp.array([0.3, 0.4]), jnp.array([3.0, 4.0])]:
        ...     u, state = tx.update(g, state)
        >>> m = state[0].measurements
        >>> float(m["norm"]), round(float(m["clipped_ema"]), 4)  # ema of [0, 1], debiased
        (5.0, 0.5263)
    """

    names: tuple = static_field(())
    transforms: tuple = ()

    def __init__(
        self,
        measures: Any = None,
        *,
        names: tuple | None = None,
        transforms: tuple | None = None,
    ):
        if names is not None or transforms is not None:  # the keyword form of unflattening
            object.__setattr__(self, "names", tuple(names or ()))
            object.__setattr__(self, "transforms", tuple(transforms or ()))
            return
        if not isinstance(measures, dict) or not all(isinstance(k, str) for k in measures):
            raise TypeError(
                f"monitor: measures must be a dict {{name: function or transform}}, "
                f"got {measures!r}"
            )
        members = []
        for name, m in measures.items():
            if callable(m):
                members.append(_Measure(m))
            else:
                try:
                    members.append(_as_member(m))
                except TypeError as e:
                    raise TypeError(
                        f"monitor: measures[{name!r}] must be a function of the updates or a "
                        f"transform, got {m!r}"
                    ) from e
        object.__setattr__(self, "names", tuple(measures))
        object.__setattr__(self, "transforms", tuple(members))

    def init(self, params):
        states = tuple(t.init(params) for t in self.transforms)
        measurements = {}
        for name, t, st in zip(self.names, self.transforms, states, strict=True):
            try:
                shape = jax.eval_shape(lambda p, s, t=t: t.update(p, s, p)[0], params, st)
            except Exception:  # noqa: BLE001  (needs extra arguments: filled on the first update)
                continue
            measurements[name] = jax.tree_util.tree_map(
                lambda x: jnp.zeros(x.shape, x.dtype), shape
            )
        return MonitorState(measurements=measurements, measure_states=states)

    def update(self, updates, state, params=None, **extra_args):
        measurements, states = {}, []
        for name, t, st in zip(self.names, self.transforms, state.measure_states, strict=True):
            measurements[name], st = t.update(updates, st, params, **extra_args)
            states.append(st)
        return updates, MonitorState(measurements=measurements, measure_states=tuple(states))

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{n!r}: {t.fn if isinstance(t, _Measure) else t!r}"
            for n, t in zip(self.names, self.transforms, strict=True)
        )
        return f"monitor({{{inner}}})"


@transform
class measure_with_ema(GradientTransformation):
    """A measure for :class:`monitor`: the exponential moving average of ``measure(updates)``.

    ``e ← β e + (1 − β) m`` with ``m = measure(updates)`` and ``e_0 = 0``; the output is
    ``e / (1 − β^t)`` at step ``t`` when ``debias``, else ``e``. A bool measurement (say
    "was the update clipped") is averaged as 0/1, giving the fraction of recent steps where it
    held. The state is optax's: ``(EmptyState(), EmaState(count, ema))``.

    Args:
        measure: a function of the updates returning arrays (of fixed shapes).
        decay: ``β`` in [0, 1] (< 1 when ``debias``), a leaf.
        debias: divide by ``1 − β^t`` (Adam's bias correction).
        accumulator_dtype: dtype of ``e`` (default: the measurement's floating dtype, or the
            default float dtype for an integer or bool measurement).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.measure_with_ema(gradtx.tree.norm, decay=0.5)
        >>> state = tx.init(jnp.zeros(2))
        >>> e1, state = tx.update(jnp.array([3.0, 4.0]), state)  # (0.5·5) / (1 − 0.5)
        >>> e2, state = tx.update(jnp.array([0.0, 1.0]), state)  # (0.5·2.5 + 0.5·1) / 0.75
        >>> float(e1), round(float(e2), 4)
        (5.0, 2.3333)

    Reference: the bias correction is Kingma & Ba's (Adam, ICLR 2015, §3).
    """

    measure: Callable[[Any], Any] = static_field()
    decay: Any = 0.9
    debias: bool = static_field(True)
    accumulator_dtype: Any = static_field(None)

    def _check(self):
        if not callable(self.measure):
            raise TypeError(f"measure_with_ema: measure must be callable, got {self.measure!r}")
        check_range(
            "measure_with_ema", "decay", self.decay, low=0.0, high=1.0, high_open=self.debias
        )
        object.__setattr__(
            self,
            "accumulator_dtype",
            check_dtype("measure_with_ema", "accumulator_dtype", self.accumulator_dtype),
        )

    def _dtype(self, x: Any) -> Any:
        if self.accumulator_dtype is not None:
            return self.accumulator_dtype
        dt = jnp.result_type(x)
        return dt if jnp.issubdtype(dt, jnp.inexact) else jnp.result_type(float)

    def init(self, params):
        m = self.measure(params)
        ema_ = jax.tree_util.tree_map(lambda x: jnp.zeros(jnp.shape(x), self._dtype(x)), m)
        return (EmptyState(), EmaState(count=jnp.zeros([], jnp.int32), ema=ema_))

    def update(self, updates, state, params=None, **extra_args):
        m = self.measure(updates)
        old = state[1]
        beta = self.decay
        new_ema = tree_lib.update_moment(m, old.ema, beta, order=1)
        count = tree_lib.safe_increment(old.count)
        out = tree_lib.bias_correction(new_ema, beta, count) if self.debias else new_ema
        return out, (EmptyState(), EmaState(count=count, ema=new_ema))


class MonitorNormsState(NamedTuple):
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
class monitor_norms(GradientTransformation):
    """Record the global norms of the incoming and outgoing updates in the state, for logging.

    ``monitor_norms(opt)`` wraps a whole optimizer (``grad_norm`` is the gradient's norm,
    ``update_norm`` the parameter step's); ``monitor_norms()`` with no inner transform can be
    inserted anywhere in a chain and records the norm of what passes through (both fields
    equal). The updates are not changed and the chain is not split: read the numbers from the
    state. (optax's ``monitor`` records measures of your choosing: :class:`monitor`.)

    Args:
        inner: the transform to wrap (default :class:`gradtx.identity`).
        measures: extra ``{name: fn}`` measurements of the incoming updates (each ``fn`` maps
            the updates to an array of fixed shape), kept in ``state.measurements``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.monitor_norms(gradtx.sgd(0.1), measures={"max": lambda g: jnp.max(g)})
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
                    "monitor_norms: measures must be a dict {name: function}, "
                    f"got {self.measures!r}"
                )
            object.__setattr__(self, "measures", _FrozenDict(self.measures))

    def _measure(self, updates: Any) -> dict:
        return {k: jnp.asarray(f(updates)) for k, f in (self.measures or {}).items()}

    def init(self, params):
        zero = jnp.zeros([], jnp.float32)
        measurements = jax.tree_util.tree_map(
            lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(self._measure, params)
        )
        return MonitorNormsState(
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
        return new, MonitorNormsState(
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
