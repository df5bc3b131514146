"""Schedules: functions of the step count ``t = 0, 1, ...`` that are immutable pytrees.

A schedule's numeric parameters (values, step counts, boundaries, rates) are pytree *leaves*,
like a transform's hyperparameters: a jitted training step that takes the optimizer (and so
the schedule inside it) as an argument compiles once for every peak learning rate or number of
decay steps, and ``jax.vmap`` evaluates a whole sweep of schedules in one call. Only choices of
shape (``staircase``, ``mode``, ``decay_shape``, ``interpolate_type``) are static.

Every schedule is called as ``schedule(count)`` on a Python int, a concrete or traced integer
array (of any shape: ``schedule(jnp.arange(100))`` gives the whole curve), and can be passed
wherever gradtx accepts a hyperparameter. Names and arguments follow optax where optax has the
schedule; each schedule's docstring gives its formula.

Step counts and arguments past int32 (``decay_steps=3_000_000_000``, an int64 count under
``jax_enable_x64``, a Python int or float count) work: a step argument of ``2**31`` or more is
held as a float, comparisons of the count with a boundary are made exactly in integers when
both are integers, and everything else is computed in floating point (float32, or float64
under ``jax_enable_x64``), as optax computes it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.core import (
    _is_plain_function,
    _StaticFn,
    check_nonnegative,
    check_range,
    concrete_float,
    field_repr,
    static_field,
    transform,
)

__all__ = [
    "BaseSchedule",
    "constant_schedule",
    "linear_schedule",
    "polynomial_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "exponential_decay",
    "inverse_time_decay",
    "natural_exp_decay",
    "cosine_decay_schedule",
    "cosine_restarts_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "warmup_stable_decay_schedule",
    "sgdr_schedule",
    "cyclic_schedule",
    "linear_onecycle_schedule",
    "cosine_onecycle_schedule",
    "join_schedules",
]


# ----------------------------------------------------------------------------------------------
# The base class and validation helpers.


class BaseSchedule:
    """Base of every gradtx schedule: a frozen dataclass pytree called on the step count.

    Subclasses are declared with :func:`gradtx.transform` (a frozen dataclass registered as a
    pytree), list their step-count arguments in ``_steps`` and implement ``__call__(count)``
    and ``_check()``. At construction, Python ints given for values become floats and
    integral floats given for step counts become ints, so two schedules that differ only in
    their numbers have the same tree structure and the same leaf types (no recompilation). A
    step count of ``2**31`` or more stays (or becomes) a float: an int32 cannot hold it.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> @gradtx.transform
        ... class inverse_sqrt(gradtx.BaseSchedule):
        ...     init_value: float
        ...     def __call__(self, count):
        ...         return self.init_value / jnp.sqrt(jnp.asarray(count) + 1.0)
        >>> round(float(inverse_sqrt(1.0)(3)), 4)
        0.5
    """

    _steps: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in dataclasses.fields(self):
            # every number a schedule is built from: finite, a number (steps: whole, >= 0)
            if f.metadata.get("static") or f.type not in ("Any", Any):
                continue
            v = getattr(self, f.name)
            if v is not None:
                (_check_steps if f.name in self._steps else check_range)(owner, f.name, v)
        for f in dataclasses.fields(self):
            if f.metadata.get("static"):
                continue
            v = getattr(self, f.name)
            if f.name in self._steps:
                object.__setattr__(self, f.name, _step_leaf(v))
            elif type(v) is int:
                object.__setattr__(self, f.name, float(v))
        self._check()

    def _check(self) -> None:
        """Validate concrete arguments; override in subclasses."""

    def __call__(self, count: Any) -> jax.Array:
        raise NotImplementedError

    def __repr__(self) -> str:
        return field_repr(self)


def _check_steps(owner: str, name: str, value: Any, *, positive: bool = False) -> None:
    """A concrete step count must be a whole number ``>= 0`` (``> 0`` when ``positive``)."""
    check_range(owner, name, value, low=0.0, low_open=positive)
    x = concrete_float(value)
    if x is not None and not x.is_integer():
        raise ValueError(f"{owner}: {name} must be a whole number of steps, got {value!r}")


def _check_less(owner: str, a_name: str, a: Any, b_name: str, b: Any, strict: bool = True) -> None:
    """When both are concrete: ``a < b`` (or ``a <= b``), else ``ValueError`` naming both."""
    x, y = concrete_float(a), concrete_float(b)
    if x is None or y is None:
        return
    if (x >= y) if strict else (x > y):
        rel = "greater than" if strict else "at least"
        raise ValueError(
            f"{owner}: {b_name} must be {rel} {a_name}, got {b_name}={b!r}, {a_name}={a!r}"
        )


def _check_increasing(owner: str, name: str, values: Sequence[Any]) -> None:
    """Concrete boundaries: whole numbers ``>= 0`` in strictly increasing order."""
    for i, v in enumerate(values):
        _check_steps(owner, f"{name}[{i}]", v)
    for i in range(1, len(values)):
        x, y = concrete_float(values[i - 1]), concrete_float(values[i])
        if x is not None and y is not None and not x < y:
            raise ValueError(
                f"{owner}: {name} must be strictly increasing, got {tuple(values)!r} "
                f"({name}[{i - 1}]={values[i - 1]!r} >= {name}[{i}]={values[i]!r})"
            )


def _split_boundaries(owner: str, boundaries_and_scales: Any) -> tuple[tuple, tuple]:
    """``{boundary: scale}`` (any order, like optax) -> boundaries and scales sorted by step."""
    if boundaries_and_scales is None:
        return (), ()
    if not isinstance(boundaries_and_scales, dict):
        raise TypeError(
            f"{owner}: boundaries_and_scales must be a dict {{step: scale}}, "
            f"got {boundaries_and_scales!r}"
        )
    for b in boundaries_and_scales:
        _check_steps(owner, "boundaries_and_scales key", b)
    items = sorted(boundaries_and_scales.items(), key=lambda kv: float(kv[0]))
    return tuple(_step_leaf(int(b)) for b, _ in items), tuple(s for _, s in items)


def _wrap_schedule(fn: Any, owner: str) -> Any:
    if not callable(fn):
        raise TypeError(f"{owner}: expected schedules (callables of the step), got {fn!r}")
    if isinstance(fn, _StaticFn) or not _is_plain_function(fn):
        return fn
    return _StaticFn(fn)


_INT32_END = 2**31


def _step_leaf(v: Any) -> Any:
    """A step argument as a leaf: a whole number below ``2**31`` as a Python int (the same leaf
    type for every value, so no recompilation), a larger one as a Python float (an int32,
    which jit would make of a Python int, cannot hold it); anything else unchanged."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int | np.integer):
        return int(v) if abs(int(v)) < _INT32_END else float(v)
    if type(v) is float and v.is_integer() and abs(v) < _INT32_END:
        return int(v)
    return v


def _is_int(x: Any) -> bool:
    """Whether ``x`` is an integer that integer arithmetic handles exactly here: a Python or
    NumPy int within int32, or an array (traced or not) of an integer dtype."""
    if isinstance(x, bool):
        return False
    if isinstance(x, int | np.integer):
        return -_INT32_END <= int(x) < _INT32_END
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.integer)


def _t(count: Any) -> jax.Array:
    """The step as a float (float32, or float64 under ``jax_enable_x64``); a Python int or a
    NumPy integer array is converted through float64, so a count past int32 does not
    overflow."""
    if isinstance(count, int | np.integer) and not isinstance(count, bool):
        count = float(count)
    elif isinstance(count, np.ndarray) and jnp.issubdtype(count.dtype, jnp.integer):
        count = count.astype(np.float64)
    return jnp.asarray(count).astype(jnp.result_type(float))


def _exact(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` can be combined in integer arithmetic without overflow: two
    Python ints (of any size), or integers within int32 (arrays: of an integer dtype)."""
    if type(a) is int and type(b) is int:
        return True
    return _is_int(a) and _is_int(b)


def _lt(a: Any, b: Any) -> Any:
    """``a < b``: exactly in integers when both are integers, else in floating point."""
    return a < b if _exact(a, b) else _t(a) < _t(b)


def _diff(a: Any, b: Any) -> Any:
    """``a − b``: in integers when both are integers (exact: step counts are ``>= 0``, so the
    difference of two int32 counts cannot overflow), else in floating point."""
    return a - b if _exact(a, b) else _t(a) - _t(b)


def _sum_steps(a: Any, b: Any) -> Any:
    """``a + b`` of two step arguments: exact for Python ints, else in floating point (an
    int32 sum could overflow)."""
    if type(a) is int and type(b) is int:
        return a + b
    return _t(a) + _t(b)


def _whole(x: Any) -> Any:
    """``floor(x)`` as a Python int when concrete (exactly as ``int()`` would), else traced."""
    c = concrete_float(x)
    return int(math.floor(c)) if c is not None else jnp.floor(x)


def _ramp(t: Any, init_value: Any, end_value: Any, steps: Any) -> jax.Array:
    """Linear from ``init_value`` at ``t = 0`` to ``end_value`` at ``t = steps``, then flat."""
    frac = jnp.clip(t, 0, steps) / jnp.maximum(steps, 1)
    return init_value + (end_value - init_value) * frac


def _cosine_weight(t: Any, steps: Any) -> jax.Array:
    """``½ (1 + cos(π min(t, T) / T))``: 1 at ``t = 0``, 0 from ``t = T`` on."""
    frac = jnp.clip(t, 0, steps) / steps
    return 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


def _interpolate(kind: str, count: Any, bounds: Sequence[Any], values: Sequence[Any]) -> jax.Array:
    """Piecewise interpolation: ``values[i]`` at ``bounds[i]`` (``bounds[0] = 0``), moving to
    ``values[i+1]`` at ``bounds[i+1]`` linearly or along a half cosine; ``values[-1]`` after."""
    out = jnp.asarray(values[-1]) + jnp.zeros(jnp.shape(count))
    for i in reversed(range(len(bounds) - 1)):
        lo, hi = bounds[i], bounds[i + 1]
        pct = _t(_diff(count, lo)) / jnp.maximum(_t(_diff(hi, lo)), 1)
        a, b = values[i], values[i + 1]
        if kind == "linear":
            v = a + (b - a) * pct
        else:
            v = b + (a - b) * 0.5 * (1.0 + jnp.cos(jnp.pi * pct))
        out = jnp.where(_lt(count, hi), v, out)
    return out


# ----------------------------------------------------------------------------------------------
# Basic shapes.


@transform
class constant_schedule(BaseSchedule):
    """A constant: ``α_t = value``.

    Args:
        value: the value (a leaf).

    Example:
        >>> import gradtx
        >>> round(float(gradtx.constant_schedule(0.1)(100)), 4)
        0.1
    """

    value: Any

    def _check(self):
        check_range("constant_schedule", "value", self.value)

    def __call__(self, count):
        shape = jnp.broadcast_shapes(jnp.shape(count), jnp.shape(self.value))
        return jnp.broadcast_to(jnp.asarray(self.value), shape)


@transform
class polynomial_schedule(BaseSchedule):
    """Polynomial transition from ``init_value`` to ``end_value`` over ``transition_steps``.

    ``α_t = (α_0 − α_end) (1 − s / T)^p + α_end`` with ``s = clip(t − t_begin, 0, T)``: the
    value is ``init_value`` until ``transition_begin`` and ``end_value`` from
    ``transition_begin + transition_steps`` on.

    Args:
        init_value: ``α_0``.
        end_value: ``α_end``.
        power: ``p`` (1 is linear).
        transition_steps: ``T >= 0`` (0: no transition, ``init_value`` throughout, as in optax).
        transition_begin: the step the transition starts at (``>= 0``).

    Example:
        >>> import gradtx
        >>> s = gradtx.polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)
        >>> [round(float(s(t)), 4) for t in (0, 5, 10, 20)]
        [1.0, 0.25, 0.0, 0.0]
    """

    init_value: Any
    end_value: Any
    power: Any
    transition_steps: Any
    transition_begin: Any = 0
    _steps = ("transition_steps", "transition_begin")

    def _check(self):
        o = type(self).__name__
        _check_steps(o, "transition_steps", self.transition_steps)  # 0: no transition
        _check_steps(o, "transition_begin", self.transition_begin)

    def __call__(self, count):
        steps = _t(self.transition_steps)
        s = jnp.clip(_t(_diff(count, self.transition_begin)), 0, steps)
        # no transition (0 steps): init_value throughout, as optax
        frac = jnp.where(steps > 0, jnp.maximum((steps - s) / jnp.where(steps > 0, steps, 1), 0), 1)
        return (self.init_value - self.end_value) * frac**self.power + self.end_value


@transform
class linear_schedule(BaseSchedule):
    """Linear transition from ``init_value`` to ``end_value`` over ``transition_steps``:
    :class:`polynomial_schedule` with ``power=1``.

    Args:
        init_value: the value until ``transition_begin``.
        end_value: the value from ``transition_begin + transition_steps`` on.
        transition_steps: length of the transition (0: ``init_value`` throughout, as in optax).
        transition_begin: the step the transition starts at (``>= 0``).

    Example:
        >>> import gradtx
        >>> s = gradtx.linear_schedule(0.0, 1.0, transition_steps=4, transition_begin=2)
        >>> [round(float(s(t)), 4) for t in range(8)]
        [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    init_value: Any
    end_value: Any
    transition_steps: Any
    transition_begin: Any = 0
    _steps = ("transition_steps", "transition_begin")

    def _check(self):
        o = type(self).__name__
        _check_steps(o, "transition_steps", self.transition_steps)  # 0: no transition
        _check_steps(o, "transition_begin", self.transition_begin)

    def __call__(self, count):
        t = _t(_diff(count, self.transition_begin))
        return _ramp(t, self.init_value, self.end_value, _t(self.transition_steps))


@transform
class piecewise_constant_schedule(BaseSchedule):
    """Piecewise constant: ``α_t = α_0 · Π_{i : b_i <= t} s_i``, multiplying the value by each
    scale ``s_i`` from its boundary ``b_i`` on.

    Args:
        init_value: ``α_0``.
        boundaries_and_scales: ``{b_i: s_i}``, boundaries in steps (sorted, as a mapping),
            scales ``>= 0``. Boundaries and scales are leaves.

    Example:
        >>> import gradtx
        >>> s = gradtx.piecewise_constant_schedule(1.0, {3: 0.5, 6: 0.1})
        >>> [round(float(s(t)), 4) for t in (0, 2, 3, 5, 6, 9)]
        [1.0, 1.0, 0.5, 0.5, 0.05, 0.05]
    """

    init_value: Any
    boundaries: tuple = ()
    scales: tuple = ()

    def __init__(self, init_value, boundaries_and_scales=None, *, boundaries=None, scales=None):
        if boundaries is None and scales is None:
            boundaries, scales = _split_boundaries(type(self).__name__, boundaries_and_scales)
        object.__setattr__(self, "init_value", init_value)
        object.__setattr__(self, "boundaries", tuple(boundaries or ()))
        object.__setattr__(self, "scales", tuple(scales or ()))
        self.__post_init__()

    def _check(self):
        o = type(self).__name__
        check_range(o, "init_value", self.init_value)
        if len(self.boundaries) != len(self.scales):
            raise ValueError(f"{o}: boundaries and scales must have the same length")
        _check_increasing(o, "boundaries", self.boundaries)
        for i, s in enumerate(self.scales):
            check_nonnegative(o, f"scales[{i}]", s)

    def __call__(self, count):
        v = jnp.asarray(self.init_value) + jnp.zeros(jnp.shape(count))
        for b, s in zip(self.boundaries, self.scales, strict=True):
            v = jnp.where(_lt(count, b), v, v * s)
        return v


@transform
class piecewise_interpolate_schedule(BaseSchedule):
    """Piecewise interpolation between the values of :class:`piecewise_constant_schedule`.

    With ``v_0 = α_0``, ``v_i = v_{i−1} s_i`` and ``b_0 = 0``: between ``b_i`` and ``b_{i+1}``
    the value moves from ``v_i`` to ``v_{i+1}``, linearly (``v_i + (v_{i+1} − v_i) p``) or
    along a half cosine (``v_{i+1} + (v_i − v_{i+1}) ½(1 + cos π p)``), ``p = (t − b_i) /
    (b_{i+1} − b_i)``; after the last boundary it stays at the last value.

    Args:
        interpolate_type: ``"linear"`` or ``"cosine"`` (static).
        init_value: ``α_0``.
        boundaries_and_scales: ``{b_i: s_i}`` as for :class:`piecewise_constant_schedule`.

    Example:
        >>> import gradtx
        >>> s = gradtx.piecewise_interpolate_schedule("linear", 1.0, {4: 0.5})
        >>> [round(float(s(t)), 4) for t in (0, 2, 4, 8)]
        [1.0, 0.75, 0.5, 0.5]
    """

    interpolate_type: str = static_field("linear")
    init_value: Any = None
    boundaries: tuple = ()
    scales: tuple = ()

    def __init__(
        self,
        interpolate_type,
        init_value,
        boundaries_and_scales=None,
        *,
        boundaries=None,
        scales=None,
    ):
        if boundaries is None and scales is None:
            boundaries, scales = _split_boundaries(type(self).__name__, boundaries_and_scales)
        object.__setattr__(self, "interpolate_type", interpolate_type)
        object.__setattr__(self, "init_value", init_value)
        object.__setattr__(self, "boundaries", tuple(boundaries or ()))
        object.__setattr__(self, "scales", tuple(scales or ()))
        self.__post_init__()

    def _check(self):
        o = type(self).__name__
        if self.interpolate_type not in ("linear", "cosine"):
            raise ValueError(
                f"{o}: interpolate_type must be 'linear' or 'cosine', got {self.interpolate_type!r}"
            )
        check_range(o, "init_value", self.init_value)
        if len(self.boundaries) != len(self.scales):
            raise ValueError(f"{o}: boundaries and scales must have the same length")
        _check_increasing(o, "boundaries", self.boundaries)
        for i, s in enumerate(self.scales):
            check_nonnegative(o, f"scales[{i}]", s)

    def __call__(self, count):
        values = [self.init_value]
        for s in self.scales:
            values.append(values[-1] * s)
        bounds = (0, *self.boundaries)
        return _interpolate(self.interpolate_type, count, bounds, values)


# ----------------------------------------------------------------------------------------------
# Decays.


@transform
class exponential_decay(BaseSchedule):
    """Exponential decay: ``α_t = α_0 r^{(t − t_begin) / T}`` after ``transition_begin``
    (``α_0`` before), with the exponent floored when ``staircase``; clipped at ``end_value``
    (from below when ``r < 1``, from above when ``r > 1``) when given.

    Args:
        init_value: ``α_0``.
        transition_steps: ``T >= 0``, the number of steps over which the value is multiplied
            by ``r`` (0: no decay, ``init_value`` throughout, as in optax).
        decay_rate: ``r > 0``.
        transition_begin: steps before the decay starts (``>= 0``).
        staircase: decay in discrete jumps every ``T`` steps (static).
        end_value: optional bound on the value.

    Example:
        >>> import gradtx
        >>> s = gradtx.exponential_decay(1.0, transition_steps=2, decay_rate=0.5, staircase=True)
        >>> [round(float(s(t)), 4) for t in range(6)]
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """

    init_value: Any
    transition_steps: Any
    decay_rate: Any
    transition_begin: Any = 0
    staircase: bool = static_field(False)
    end_value: Any = None
    _steps = ("transition_steps", "transition_begin")

    def _check(self):
        o = type(self).__name__
        check_range(o, "init_value", self.init_value)
        _check_steps(o, "transition_steps", self.transition_steps)  # 0: no transition
        check_range(o, "decay_rate", self.decay_rate, low=0.0, low_open=True)
        _check_steps(o, "transition_begin", self.transition_begin)

    def __call__(self, count):
        d = _t(_diff(count, self.transition_begin))
        steps = _t(self.transition_steps)
        p = d / jnp.where(steps > 0, steps, 1)
        if self.staircase:
            p = jnp.floor(p)
        # no transition (0 steps): init_value throughout, as optax
        decayed = self.init_value * jnp.power(self.decay_rate, p)
        v = jnp.where((d <= 0) | (steps <= 0), self.init_value, decayed)
        if self.end_value is not None:
            e = self.end_value
            v = jnp.where(self.decay_rate < 1, jnp.maximum(v, e), jnp.minimum(v, e))
        return v


@transform
class inverse_time_decay(BaseSchedule):
    """Inverse time decay: ``α_t = α_0 / (1 + r t / T)`` (``⌊t / T⌋`` when ``staircase``).

    Args:
        init_value: ``α_0``.
        decay_steps: ``T > 0``.
        decay_rate: ``r >= 0`` (the form ``α_0 / (1 + β t)`` of course notes has ``β = r / T``).
        staircase: floor ``t / T`` (static).

    Example:
        >>> import gradtx
        >>> s = gradtx.inverse_time_decay(1.0, decay_steps=10, decay_rate=1.0)
        >>> [round(float(s(t)), 4) for t in (0, 10, 30)]
        [1.0, 0.5, 0.25]
    """

    init_value: Any
    decay_steps: Any
    decay_rate: Any
    staircase: bool = static_field(False)
    _steps = ("decay_steps",)

    def _check(self):
        o = type(self).__name__
        check_range(o, "init_value", self.init_value)
        _check_steps(o, "decay_steps", self.decay_steps, positive=True)
        check_nonnegative(o, "decay_rate", self.decay_rate)

    def __call__(self, count):
        p = _t(count) / _t(self.decay_steps)
        if self.staircase:
            p = jnp.floor(p)
        return self.init_value / (1.0 + self.decay_rate * p)


@transform
class natural_exp_decay(BaseSchedule):
    """Natural exponential decay: ``α_t = α_0 exp(−r t / T)`` (``⌊t / T⌋`` when ``staircase``).

    Args:
        init_value: ``α_0``.
        decay_steps: ``T > 0``.
        decay_rate: ``r >= 0``.
        staircase: floor ``t / T`` (static).

    Example:
        >>> import gradtx, math
        >>> s = gradtx.natural_exp_decay(1.0, decay_steps=10, decay_rate=1.0)
        >>> round(float(s(10)), 4) == round(math.exp(-1), 4)
        True
    """

    init_value: Any
    decay_steps: Any
    decay_rate: Any
    staircase: bool = static_field(False)
    _steps = ("decay_steps",)

    def _check(self):
        o = type(self).__name__
        check_range(o, "init_value", self.init_value)
        _check_steps(o, "decay_steps", self.decay_steps, positive=True)
        check_nonnegative(o, "decay_rate", self.decay_rate)

    def __call__(self, count):
        p = _t(count) / _t(self.decay_steps)
        if self.staircase:
            p = jnp.floor(p)
        return self.init_value * jnp.exp(-self.decay_rate * p)


@transform
class cosine_decay_schedule(BaseSchedule):
    """Cosine decay: ``α_t = α_0 ((1 − a) c_t^e + a)``, ``c_t = ½ (1 + cos(π min(t, T) / T))``.

    Goes from ``init_value`` to ``alpha · init_value`` over ``decay_steps`` and stays there.

    Args:
        init_value: ``α_0``.
        decay_steps: ``T > 0``.
        alpha: the final value as a fraction of ``α_0``.
        exponent: ``e`` (1 is the plain cosine).

    Example:
        >>> import gradtx
        >>> s = gradtx.cosine_decay_schedule(1.0, decay_steps=10, alpha=0.1)
        >>> [round(float(s(t)), 4) for t in (0, 5, 10, 20)]
        [1.0, 0.55, 0.1, 0.1]

    Reference: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    ICLR 2017.
    """

    init_value: Any
    decay_steps: Any
    alpha: Any = 0.0
    exponent: Any = 1.0
    _steps = ("decay_steps",)

    def _check(self):
        o = type(self).__name__
        check_range(o, "init_value", self.init_value)
        _check_steps(o, "decay_steps", self.decay_steps, positive=True)
        check_range(o, "alpha", self.alpha)

    def __call__(self, count):
        c = _cosine_weight(_t(count), _t(self.decay_steps))
        return self.init_value * ((1.0 - self.alpha) * c**self.exponent + self.alpha)


@transform
class cosine_restarts_schedule(BaseSchedule):
    """Cosine decay with warm restarts (SGDR's ``T_0``, ``T_mult``).

    Period ``i`` lasts ``T_i = T_0 m^i`` steps and starts at ``S_i = Σ_{j<i} T_j``; within it
    ``α_t = α_0 (a + (1 − a) ½ (1 + cos(π (t − S_i) / T_i)))``: from ``α_0`` down towards
    ``a α_0``, back to ``α_0`` when the next period starts.

    Args:
        init_value: ``α_0``.
        first_period: ``T_0 > 0``, steps in the first period.
        period_multiplier: ``m >= 1``, each period's length over the previous one's.
        alpha: the floor as a fraction of ``α_0``, in [0, 1].

    Example:
        >>> import gradtx
        >>> s = gradtx.cosine_restarts_schedule(1.0, first_period=4, period_multiplier=2)
        >>> [round(float(s(t)), 4) for t in (0, 2, 4, 8, 12)]
        [1.0, 0.5, 1.0, 0.5, 1.0]

    Reference: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    ICLR 2017.
    """

    init_value: Any
    first_period: Any
    period_multiplier: Any = 1.0
    alpha: Any = 0.0
    _steps = ("first_period",)

    def _check(self):
        o = type(self).__name__
        check_range(o, "init_value", self.init_value)
        _check_steps(o, "first_period", self.first_period, positive=True)
        check_range(o, "period_multiplier", self.period_multiplier, low=1.0)
        check_range(o, "alpha", self.alpha, low=0.0, high=1.0)

    def __call__(self, count):
        t = _t(count)
        t0, m = _t(self.first_period), self.period_multiplier
        # Equal periods: i = ⌊t / T0⌋. Growing ones: S_i = T0 (m^i − 1) / (m − 1), so
        # i = ⌊log(1 + t (m − 1) / T0) / log m⌋, corrected by one where rounding misplaces it.
        grow = m > 1
        mm = jnp.where(grow, m, 2.0)
        start = lambda i: t0 * (mm**i - 1.0) / (mm - 1.0)  # noqa: E731
        i = jnp.floor(jnp.log1p(t * (mm - 1.0) / t0) / jnp.log(mm))
        i = jnp.where(t < start(i), i - 1, i)
        i = jnp.where(t >= start(i + 1), i + 1, i)
        i = jnp.where(grow, i, jnp.floor(t / t0))
        s = jnp.where(grow, start(i), i * t0)
        period = t0 * jnp.where(grow, mm, 1.0) ** i
        c = 0.5 * (1.0 + jnp.cos(jnp.pi * (t - s) / period))
        return self.init_value * (self.alpha + (1.0 - self.alpha) * c)


# ----------------------------------------------------------------------------------------------
# Warmup and multi-phase schedules.


@transform
class warmup_constant_schedule(BaseSchedule):
    """Linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps``, then constant.

    Args:
        init_value: the value at step 0.
        peak_value: the value from ``warmup_steps`` on.
        warmup_steps: length of the warmup (``>= 0``; 0 starts at ``peak_value``).

    Example:
        >>> import gradtx
        >>> s = gradtx.warmup_constant_schedule(0.0, 1.0, warmup_steps=4)
        >>> [round(float(s(t)), 4) for t in (0, 1, 4, 9)]
        [0.0, 0.25, 1.0, 1.0]
    """

    init_value: Any
    peak_value: Any
    warmup_steps: Any
    _steps = ("warmup_steps",)

    def _check(self):
        _check_steps(type(self).__name__, "warmup_steps", self.warmup_steps)

    def __call__(self, count):
        ramp = _ramp(_t(count), self.init_value, self.peak_value, _t(self.warmup_steps))
        return jnp.where(_lt(count, self.warmup_steps), ramp, self.peak_value)


@transform
class warmup_cosine_decay_schedule(BaseSchedule):
    """Linear warmup to ``peak_value``, then cosine decay to ``end_value``.

    For ``t < W``: ``α_0 + (α_peak − α_0) t / W``; then with ``D = decay_steps − W``,
    ``c = ½ (1 + cos(π min(t − W, D) / D))`` and the floor ``a = α_end / α_peak``:
    ``α_peak ((1 − a) c^e + a)``, which is ``α_end + (α_peak − α_end) c^e``. As in optax,
    ``a = 0`` when ``α_peak = 0``, so the decay phase is then 0 whatever ``end_value``.
    ``decay_steps <= warmup_steps`` is refused (optax refuses it too: the cosine would have no
    positive length).

    Args:
        init_value: the value at step 0.
        peak_value: the value at the end of the warmup.
        warmup_steps: ``W >= 0`` (0: the decay starts at step 0, from ``peak_value``).
        decay_steps: total length of warmup plus decay (as in optax), ``> warmup_steps``.
        end_value: the final value (``peak_value · a``).
        exponent: ``e`` of the cosine factor.

    Example:
        >>> import gradtx
        >>> s = gradtx.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=6)
        >>> [round(float(s(t)), 4) for t in range(8)]
        [0.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
    """

    init_value: Any
    peak_value: Any
    warmup_steps: Any
    decay_steps: Any
    end_value: Any = 0.0
    exponent: Any = 1.0
    _steps = ("warmup_steps", "decay_steps")

    def _check(self):
        o = type(self).__name__
        _check_steps(o, "warmup_steps", self.warmup_steps)
        _check_steps(o, "decay_steps", self.decay_steps, positive=True)
        _check_less(o, "warmup_steps", self.warmup_steps, "decay_steps", self.decay_steps)

    def __call__(self, count):
        w, peak = self.warmup_steps, self.peak_value
        ramp = _ramp(_t(count), self.init_value, peak, _t(w))
        c = _cosine_weight(_t(_diff(count, w)), _t(_diff(self.decay_steps, w)))
        # optax's form: the floor a = α_end / α_peak (0 when α_peak = 0) scales the cosine.
        flat = jnp.asarray(peak) == 0
        alpha = jnp.where(flat, 0.0, self.end_value / jnp.where(flat, 1.0, peak))
        decay = peak * ((1.0 - alpha) * c**self.exponent + alpha)
        return jnp.where(_lt(count, w), ramp, decay)


@transform
class warmup_exponential_decay_schedule(BaseSchedule):
    """Linear warmup to ``peak_value`` over ``warmup_steps``, then :class:`exponential_decay`
    from ``peak_value`` (its step counted from the end of the warmup).

    ``transition_steps``, ``decay_rate``, ``transition_begin``, ``staircase`` and ``end_value``: as
    for :class:`exponential_decay`.

    Args:
        init_value: the value at step 0.
        peak_value: the value at the end of the warmup.
        warmup_steps: ``>= 0``.

    Example:
        >>> import gradtx
        >>> s = gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 2, 1, 0.5)
        >>> [round(float(s(t)), 4) for t in range(6)]
        [0.0, 0.5, 1.0, 0.5, 0.25, 0.125]
    """

    init_value: Any
    peak_value: Any
    warmup_steps: Any
    transition_steps: Any
    decay_rate: Any
    transition_begin: Any = 0
    staircase: bool = static_field(False)
    end_value: Any = None
    _steps = ("warmup_steps", "transition_steps", "transition_begin")

    def _check(self):
        o = type(self).__name__
        _check_steps(o, "warmup_steps", self.warmup_steps)
        _check_steps(o, "transition_steps", self.transition_steps)  # 0: no decay
        check_range(o, "decay_rate", self.decay_rate, low=0.0, low_open=True)
        _check_steps(o, "transition_begin", self.transition_begin)

    def __call__(self, count):
        w = self.warmup_steps
        ramp = _ramp(_t(count), self.init_value, self.peak_value, _t(w))
        decay = exponential_decay(
            self.peak_value,
            self.transition_steps,
            self.decay_rate,
            self.transition_begin,
            self.staircase,
            self.end_value,
        )(_diff(count, w))
        return jnp.where(_lt(count, w), ramp, decay)


@transform
class warmup_stable_decay_schedule(BaseSchedule):
    """Warmup-stable-decay (WSD): linear warmup, a plateau at ``peak_value``, then a cooldown.

    With ``W, S, D`` the three lengths and ``f = (t − W − S) / D`` the fraction of the
    cooldown done: ``α_0 + (α_peak − α_0) t / W`` for ``t < W``; ``α_peak`` until ``W + S``;
    then ``α_end + (α_peak − α_end) g(f)`` with ``g(f) = 1 − f`` (``"linear"``),
    ``½ (1 + cos π f)`` (``"cosine"``) or ``1 − √f`` (``"1-sqrt"``); ``α_end`` after.

    Args:
        peak_value: ``α_peak``.
        warmup_steps: ``W >= 0``.
        stable_steps: ``S >= 0``.
        decay_steps: ``D > 0``.
        init_value: ``α_0``.
        end_value: ``α_end``.
        decay_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"`` (static).

    Example:
        >>> import gradtx
        >>> s = gradtx.warmup_stable_decay_schedule(1.0, 2, 2, 4, decay_shape="1-sqrt")
        >>> [round(float(s(t)), 4) for t in (0, 1, 2, 3, 4, 5, 8, 9)]
        [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0]

    Reference: Hu et al., "MiniCPM", 2024; Hägele et al., "Scaling Laws and Compute-Optimal
    Training Beyond Fixed Training Durations", 2024 (the 1-sqrt cooldown).
    """

    peak_value: Any
    warmup_steps: Any
    stable_steps: Any
    decay_steps: Any
    init_value: Any = 0.0
    end_value: Any = 0.0
    decay_shape: str = static_field("linear")
    _steps = ("warmup_steps", "stable_steps", "decay_steps")

    def _check(self):
        o = type(self).__name__
        _check_steps(o, "warmup_steps", self.warmup_steps)
        _check_steps(o, "stable_steps", self.stable_steps)
        _check_steps(o, "decay_steps", self.decay_steps, positive=True)
        if self.decay_shape not in ("linear", "cosine", "1-sqrt"):
            raise ValueError(
                f"{o}: decay_shape must be 'linear', 'cosine' or '1-sqrt', got {self.decay_shape!r}"
            )

    def __call__(self, count):
        w, s, d = self.warmup_steps, self.stable_steps, _t(self.decay_steps)
        ramp = _ramp(_t(count), self.init_value, self.peak_value, _t(w))
        since_warmup = _diff(count, w)
        f = jnp.clip(_t(since_warmup) - _t(s), 0, d) / d
        if self.decay_shape == "linear":
            g = 1.0 - f
        elif self.decay_shape == "cosine":
            g = 0.5 * (1.0 + jnp.cos(jnp.pi * f))
        else:
            g = 1.0 - jnp.sqrt(f)
        cool = self.end_value + (self.peak_value - self.end_value) * g
        stable = _lt(since_warmup, s)
        return jnp.where(_lt(count, w), ramp, jnp.where(stable, self.peak_value, cool))


@transform
class join_schedules(BaseSchedule):
    """Schedules one after the other: ``schedules[i]`` runs from ``boundaries[i−1]`` on (the
    first from step 0), called on the steps since its boundary.

    Args:
        schedules: the schedules (gradtx schedules stay pytrees; plain functions are held
            statically).
        boundaries: ``len(schedules) − 1`` steps, strictly increasing (leaves).

    Example:
        >>> import gradtx
        >>> s = gradtx.join_schedules(
        ...     [gradtx.constant_schedule(1.0), gradtx.linear_schedule(1.0, 0.0, 4)], [2])
        >>> [round(float(s(t)), 4) for t in range(7)]
        [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    """

    schedules: tuple
    boundaries: tuple

    def _check(self):
        o = type(self).__name__
        scheds = tuple(_wrap_schedule(s, o) for s in self.schedules)
        object.__setattr__(self, "schedules", scheds)
        object.__setattr__(self, "boundaries", tuple(_step_leaf(b) for b in self.boundaries))
        if not scheds:
            raise ValueError(f"{o}: schedules must not be empty")
        if len(self.boundaries) != len(scheds) - 1:
            raise ValueError(
                f"{o}: boundaries must have len(schedules) - 1 = {len(scheds) - 1} entries, "
                f"got {len(self.boundaries)}"
            )
        _check_increasing(o, "boundaries", self.boundaries)

    def __call__(self, count):
        out = self.schedules[0](count)
        for b, s in zip(self.boundaries, self.schedules[1:], strict=True):
            out = jnp.where(_lt(count, b), out, s(_diff(count, b)))
        return out


@transform
class sgdr_schedule(BaseSchedule):
    """SGD with warm restarts as a sequence of :class:`warmup_cosine_decay_schedule` runs.

    Each dict of ``cosine_kwargs`` gives the arguments of one run; run ``i`` starts when the
    previous runs' ``decay_steps`` have elapsed. (For the ``T_0, T_mult`` form see
    :class:`cosine_restarts_schedule`.)

    Args:
        cosine_kwargs: dicts of :class:`warmup_cosine_decay_schedule` arguments (or the
            schedules themselves).

    Example:
        >>> import gradtx
        >>> run = dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=3)
        >>> s = gradtx.sgdr_schedule([run, run])
        >>> [round(float(s(t)), 4) for t in range(7)]
        [0.0, 1.0, 0.5, 0.0, 1.0, 0.5, 0.0]

    Reference: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    ICLR 2017.
    """

    schedules: tuple = ()

    def __init__(self, cosine_kwargs: Iterable[Any] = (), *, schedules: Any = None):
        items = cosine_kwargs if schedules is None else schedules
        scheds = []
        for k in items:
            scheds.append(warmup_cosine_decay_schedule(**k) if isinstance(k, dict) else k)
        object.__setattr__(self, "schedules", tuple(scheds))
        self.__post_init__()

    def _check(self):
        if not self.schedules:
            raise ValueError("sgdr_schedule: cosine_kwargs must not be empty")

    def __call__(self, count):
        out = self.schedules[0](count)
        start = 0
        for prev, s in zip(self.schedules[:-1], self.schedules[1:], strict=True):
            start = _sum_steps(start, prev.decay_steps)
            out = jnp.where(_lt(count, start), out, s(_diff(count, start)))
        return out


@transform
class cyclic_schedule(BaseSchedule):
    """Cyclical learning rate (triangular), starting at ``min_value``.

    With ``ΔT`` the half cycle, ``k = ⌊1 + t / (2ΔT)⌋`` and ``b = |t / ΔT − 2k + 1|``:
    ``α_t = α_min + (α_max − α_min) · max(0, 1 − b) · a_t`` where the amplitude factor ``a_t``
    is 1 (``"triangular"``), ``1 / 2^{k−1}`` (``"triangular2"``) or ``γ^t`` (``"exp_range"``).

    Args:
        min_value: ``α_min``, the value at the start of every cycle.
        max_value: ``α_max >= α_min``, reached in the middle of the first cycle.
        half_cycle_steps: ``ΔT > 0``.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"`` (static).
        gamma: ``γ`` in (0, 1] for ``"exp_range"``.

    Example:
        >>> import gradtx
        >>> s = gradtx.cyclic_schedule(0.0, 1.0, half_cycle_steps=2, mode="triangular2")
        >>> [round(float(s(t)), 4) for t in range(7)]
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.25, 0.5]

    Reference: Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017.
    """

    min_value: Any
    max_value: Any
    half_cycle_steps: Any
    mode: str = static_field("triangular")
    gamma: Any = 1.0
    _steps = ("half_cycle_steps",)

    def _check(self):
        o = type(self).__name__
        _check_steps(o, "half_cycle_steps", self.half_cycle_steps, positive=True)
        _check_less(o, "min_value", self.min_value, "max_value", self.max_value, strict=False)
        check_range(o, "gamma", self.gamma, low=0.0, high=1.0, low_open=True)
        if self.mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(
                f"{o}: mode must be 'triangular', 'triangular2' or 'exp_range', got {self.mode!r}"
            )

    def __call__(self, count):
        t = _t(count)
        h = _t(self.half_cycle_steps)
        k = jnp.floor(1.0 + t / (2.0 * h))
        b = jnp.abs(t / h - 2.0 * k + 1.0)
        tri = jnp.maximum(0.0, 1.0 - b)
        if self.mode == "triangular2":
            tri = tri / 2.0 ** (k - 1.0)
        elif self.mode == "exp_range":
            tri = tri * jnp.power(self.gamma, t)
        return self.min_value + (self.max_value - self.min_value) * tri


def _onecycle_bound(pct: Any, steps: Any) -> Any:
    return _whole(pct * steps)


@transform
class linear_onecycle_schedule(BaseSchedule):
    """One-cycle policy with three linear phases: ``α_peak / d`` up to ``α_peak`` by
    ``⌊p_start T⌋``, back down to ``α_peak / d`` by ``⌊p_final T⌋``, then down to
    ``α_peak / (d d_final)`` by ``T``, and constant after.

    Args:
        transition_steps: ``T > 0``.
        peak_value: ``α_peak``.
        pct_start: fraction of ``T`` spent rising, in [0, 1].
        pct_final: fraction of ``T`` at the end of the descent, in [pct_start, 1].
        div_factor: ``d``, the start value is ``α_peak / d``.
        final_div_factor: ``d_final``, the last value is ``α_peak / (d d_final)``.

    Example:
        >>> import gradtx
        >>> s = gradtx.linear_onecycle_schedule(10, 1.0, div_factor=10.0)
        >>> [round(float(s(t)), 4) for t in (0, 3, 8, 10)]
        [0.1, 1.0, 0.1, 0.0]

    Reference: Smith & Topin, "Super-Convergence", 2017.
    """

    transition_steps: Any
    peak_value: Any
    pct_start: Any = 0.3
    pct_final: Any = 0.85
    div_factor: Any = 25.0
    final_div_factor: Any = 1e4
    _steps = ("transition_steps",)

    def _check(self):
        o = type(self).__name__
        _check_steps(o, "transition_steps", self.transition_steps, positive=True)
        check_range(o, "pct_start", self.pct_start, low=0.0, high=1.0)
        check_range(o, "pct_final", self.pct_final, low=0.0, high=1.0)
        _check_less(o, "pct_start", self.pct_start, "pct_final", self.pct_final)
        check_range(o, "div_factor", self.div_factor, low=0.0, low_open=True)
        check_range(o, "final_div_factor", self.final_div_factor, low=0.0, low_open=True)

    def __call__(self, count):
        n = self.transition_steps
        bounds = (0, _onecycle_bound(self.pct_start, n), _onecycle_bound(self.pct_final, n), n)
        v0 = self.peak_value / self.div_factor
        v1 = v0 * self.div_factor
        v2 = v1 / self.div_factor
        v3 = v2 / self.final_div_factor
        return _interpolate("linear", count, bounds, (v0, v1, v2, v3))


@transform
class cosine_onecycle_schedule(BaseSchedule):
    """One-cycle policy with cosine phases: from ``α_peak / d`` up to ``α_peak`` by
    ``⌊p_start T⌋`` and down to ``α_peak / (d d_final)`` by ``T`` along half cosines.

    Args:
        transition_steps: ``T > 0``.
        peak_value: ``α_peak``.
        pct_start: fraction of ``T`` spent rising, in [0, 1).
        div_factor: ``d``, the start value is ``α_peak / d``.
        final_div_factor: ``d_final``, the last value is ``α_peak / (d d_final)``.

    Example:
        >>> import gradtx
        >>> s = gradtx.cosine_onecycle_schedule(10, 1.0, pct_start=0.2, div_factor=10.0)
        >>> [round(float(s(t)), 4) for t in (0, 1, 2, 10)]
        [0.1, 0.55, 1.0, 0.0]

    Reference: Smith & Topin, "Super-Convergence", 2017.
    """

    transition_steps: Any
    peak_value: Any
    pct_start: Any = 0.3
    div_factor: Any = 25.0
    final_div_factor: Any = 1e4
    _steps = ("transition_steps",)

    def _check(self):
        o = type(self).__name__
        _check_steps(o, "transition_steps", self.transition_steps, positive=True)
        check_range(o, "pct_start", self.pct_start, low=0.0, high=1.0, high_open=True)
        check_range(o, "div_factor", self.div_factor, low=0.0, low_open=True)
        check_range(o, "final_div_factor", self.final_div_factor, low=0.0, low_open=True)

    def __call__(self, count):
        n = self.transition_steps
        bounds = (0, _onecycle_bound(self.pct_start, n), n)
        v0 = self.peak_value / self.div_factor
        v1 = v0 * self.div_factor
        v2 = v1 / (self.div_factor * self.final_div_factor)
        return _interpolate("cosine", count, bounds, (v0, v1, v2))


# ``gradtx.schedules`` is also the namespace optax users reach for as ``optax.schedules``,
# which holds the hyperparameter injectors too. They are defined in gradtx.hyperparams (and
# ``Schedule`` in gradtx.core), which import this module, so they are looked up on first use.
_NAMESPACE_EXTRAS = (
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "Schedule",
    "StatefulSchedule",
    "WrappedSchedule",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
)


def __getattr__(name: str) -> Any:
    if name in _NAMESPACE_EXTRAS:
        import gradtx

        return getattr(gradtx, name)
    raise AttributeError(f"module 'gradtx.schedules' has no attribute {name!r}")
