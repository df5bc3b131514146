"""Momentum (``trace``) and exponential moving averages of updates (``ema``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    check_dtype,
    check_range,
    hyper,
    static_field,
    transform,
)

__all__ = ["trace", "ema", "TraceState", "EmaState"]


class TraceState(NamedTuple):
    """Momentum buffer ``m`` (and the step count, kept only when the decay is a schedule)."""

    trace: Any
    count: Any = None


class EmaState(NamedTuple):
    """Step count and the running average of updates."""

    count: jax.Array
    ema: Any


@transform
class trace(GradientTransformation):
    """Heavy-ball momentum in trace form: ``m ← g + ρ m``; output ``m`` (or ``g + ρ m``).

    With a constant learning rate this is the course notes' ``v ← ρ v − α g; θ ← θ + v`` with
    ``v = −α m``; with ``nesterov=True`` the output ``g + ρ m`` gives the change-of-variables
    form of Nesterov's accelerated gradient, ``θ ← θ − ρ v_prev + (1 + ρ) v``.

    Args:
        decay: the momentum ``ρ`` in [0, 1] (a leaf, or a schedule of the step count).
        nesterov: output ``g + ρ m`` instead of ``m``.
        accumulator_dtype: dtype of ``m`` (default: the parameters' dtype).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.trace(0.5)
        >>> s = tx.init(jnp.zeros(1))
        >>> u, s = tx.update(jnp.ones(1), s)
        >>> u, s = tx.update(jnp.ones(1), s)
        >>> u.tolist()
        [1.5]

    Reference: Polyak, "Some methods of speeding up the convergence of iteration methods", 1964;
    Sutskever et al., "On the importance of initialization and momentum in deep learning", 2013.
    """

    decay: Any
    nesterov: bool = static_field(False)
    accumulator_dtype: Any = static_field(None)

    def _check(self):
        check_range("trace", "decay", self.decay, low=0.0, high=1.0)
        object.__setattr__(
            self,
            "accumulator_dtype",
            check_dtype("trace", "accumulator_dtype", self.accumulator_dtype),
        )

    def init(self, params):
        count = jnp.zeros([], jnp.int32) if callable(self.decay) else None
        return TraceState(
            trace=tree_lib.tree_zeros_like(params, self.accumulator_dtype), count=count
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.trace, "trace", "updates", "momentum buffer")
        rho = hyper(self.decay, state.count)
        f = lambda g, t: None if g is None else g + rho * t  # noqa: E731
        new_trace = jax.tree_util.tree_map(f, updates, state.trace, is_leaf=lambda x: x is None)
        out = (
            jax.tree_util.tree_map(f, updates, new_trace, is_leaf=lambda x: x is None)
            if self.nesterov
            else new_trace
        )
        out = tree_lib.tree_cast_like(out, updates)
        new_trace = tree_lib.tree_cast_like(new_trace, state.trace)
        count = None if state.count is None else tree_lib.safe_increment(state.count)
        return out, TraceState(trace=new_trace, count=count)


@transform
class ema(GradientTransformation):
    """Exponential moving average of updates: ``e ← β e + (1 − β) u``; output ``e / (1 − β^t)``.

    Args:
        decay: ``β`` in [0, 1].
        debias: divide by ``1 − β^t`` (Adam's bias correction) so early averages are unbiased
            (then ``β < 1``).
        accumulator_dtype: dtype of ``e`` (default: the parameters' dtype).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.ema(0.9)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)  # debiased: the first average is the update itself
        2.0

    Reference: the bias correction is Kingma & Ba's (Adam, ICLR 2015, §3).
    """

    decay: Any
    debias: bool = static_field(True)
    accumulator_dtype: Any = static_field(None)

    def _check(self):
        # with debiasing, decay = 1 would divide by 1 - 1^t = 0
        check_range("ema", "decay", self.decay, low=0.0, high=1.0, high_open=self.debias)
        object.__setattr__(
            self,
            "accumulator_dtype",
            check_dtype("ema", "accumulator_dtype", self.accumulator_dtype),
        )

    def init(self, params):
        return EmaState(
            count=jnp.zeros([], jnp.int32),
            ema=tree_lib.tree_zeros_like(params, self.accumulator_dtype),
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.ema, "ema", "updates", "average")
        beta = hyper(self.decay, state.count)
        new_ema = tree_lib.update_moment(updates, state.ema, beta, order=1)
        count = tree_lib.safe_increment(state.count)
        out = tree_lib.bias_correction(new_ema, beta, count) if self.debias else new_ema
        return tree_lib.tree_cast_like(out, updates), EmaState(count=count, ema=new_ema)
