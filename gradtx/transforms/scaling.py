"""Scaling by a constant, a learning rate, or a schedule of the step count; and scaling a
gradient in the backward pass only (:func:`scale_gradient`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    CountState,
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    check_range,
    concrete_float,
    hyper,
    static_field,
    transform,
)

__all__ = [
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "ScaleByScheduleState",
    "ScaleState",
    "scale_gradient",
]

ScaleState = EmptyState  # optax's name for the state of ``scale``


class ScaleByScheduleState(NamedTuple):
    """The step count a schedule is evaluated at (starts at 0)."""

    count: jax.Array


def _scale_tree(updates: Any, factor: Any) -> Any:
    return tree_lib.tree_scale(factor, updates)


@transform
class scale(GradientTransformation):
    """Multiply updates by a constant: ``u ← s · u``.

    Args:
        step_size: the factor ``s`` (a pytree leaf: changing it does not recompile).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale(-2.0)
        >>> tx.update(jnp.array([1.0, 2.0]), tx.init(None))[0].tolist()
        [-2.0, -4.0]
    """

    step_size: Any

    def _check(self):
        check_range("scale", "step_size", self.step_size)

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        return _scale_tree(updates, self.step_size), state


@transform
class scale_by_schedule(GradientTransformation):
    """Multiply updates by a schedule of the step count: ``u ← s(t) · u``, ``t = 0, 1, ...``.

    Args:
        step_size_fn: a schedule (a gradtx schedule, whose parameters are leaves, or any
            function of the int32 step count).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_schedule(lambda t: 1.0 / (t + 1))
        >>> s = tx.init(None)
        >>> u, s = tx.update(jnp.ones(1), s)
        >>> u, s = tx.update(jnp.ones(1), s)
        >>> u.tolist()
        [0.5]
    """

    step_size_fn: Any

    def _check(self):
        if not callable(self.step_size_fn):
            raise TypeError(
                f"scale_by_schedule: step_size_fn must be callable, got {self.step_size_fn!r}"
            )

    def init(self, params):
        return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(self, updates, state, params=None, **extra_args):
        factor = self.step_size_fn(state.count)
        return _scale_tree(updates, factor), ScaleByScheduleState(
            count=tree_lib.safe_increment(state.count)
        )


@transform
class scale_by_learning_rate(GradientTransformation):
    """Scale by the learning rate, flipping the sign for descent: ``u ← −α_t · u``.

    Args:
        learning_rate: a float (a pytree leaf: sweeps never recompile) or a schedule of the step
            count ``t = 0, 1, ...`` (then the state keeps the count).
        flip_sign: multiply by ``−α`` (descent, the default) rather than ``α``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_learning_rate(0.1)
        >>> u, _ = tx.update(jnp.array([1.0]), tx.init(None))
        >>> round(float(u[0]), 4)
        -0.1
    """

    learning_rate: ScalarOrSchedule = None
    flip_sign: bool = static_field(True, kw_only=True)

    def _check(self):
        if self.learning_rate is None:
            raise TypeError(
                "scale_by_learning_rate: learning_rate must be a number, array or schedule, "
                "got None"
            )
        check_range("scale_by_learning_rate", "learning_rate", self.learning_rate)

    def init(self, params):
        if callable(self.learning_rate):
            return CountState(count=jnp.zeros([], jnp.int32))
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        count = state.count if isinstance(state, CountState) else None
        lr = hyper(self.learning_rate, count)
        factor = -lr if self.flip_sign else lr
        if count is not None:
            state = CountState(count=tree_lib.safe_increment(count))
        return _scale_tree(updates, factor), state


@jax.custom_vjp
def _scaled_backward(inputs: Any, scale: Any) -> Any:
    return inputs


def _scaled_backward_fwd(inputs: Any, scale: Any) -> tuple[Any, Any]:
    return inputs, scale


def _scaled_backward_bwd(scale: Any, cotangent: Any) -> tuple[Any, None]:
    def f(c):
        if c.dtype == jax.dtypes.float0:  # the zero cotangent of an integer input
            return c
        return (c * scale).astype(c.dtype)

    return jax.tree_util.tree_map(f, cotangent), None


_scaled_backward.defvjp(_scaled_backward_fwd, _scaled_backward_bwd)


def scale_gradient(inputs: Any, scale: Any) -> Any:
    """The identity in the forward pass, whose gradient is multiplied by ``s`` in the backward
    pass: ``y = x`` and ``∂L/∂x = s · ∂L/∂y``.

    Placed between two parts of a model it rescales the gradient reaching the first part
    (``s = 0`` stops it, a negative ``s`` reverses it, as in a gradient reversal layer). A
    concrete ``s = 1`` returns ``inputs`` unchanged and a concrete ``s = 0`` is
    ``jax.lax.stop_gradient``; any other or traced ``s`` goes through a ``jax.custom_vjp``.

    Args:
        inputs: a pytree of arrays.
        scale: the factor ``s`` applied to the gradient (a scalar; may be traced).

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> f = lambda x: jnp.sum(gradtx.scale_gradient(x, 0.5) ** 2)
        >>> float(f(jnp.array(3.0))), float(jax.grad(f)(jnp.array(3.0)))  # 9 and 0.5 · 6
        (9.0, 3.0)

    Reference: Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
    ICML 2015 (the gradient reversal layer, ``s < 0``).
    """
    check_range("scale_gradient", "scale", scale)
    s = concrete_float(scale)
    if s == 1.0:
        return inputs
    if s == 0.0:
        return jax.lax.stop_gradient(inputs)
    return _scaled_backward(inputs, scale)
