"""Reduce the step size when a monitored value stops improving."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    check_nonnegative,
    check_range,
    concrete_float,
    transform,
)

__all__ = ["reduce_on_plateau", "ReduceOnPlateauState"]


class ReduceOnPlateauState(NamedTuple):
    """The current ``scale``, the ``best_value`` seen, the evaluations without improvement
    (``plateau_count``), the evaluations of cooldown left, and the running mean ``avg_value``
    of the ``count`` values accumulated since the last evaluation."""

    scale: jax.Array
    best_value: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: jax.Array
    avg_value: jax.Array


def _check_whole(owner: str, name: str, value: Any, low: float) -> None:
    x = concrete_float(value)
    if x is not None and not x.is_integer():
        raise ValueError(f"{owner}: {name} must be a whole number, got {value!r}")
    check_range(owner, name, value, low=low)


def _float_dtype(params: Any) -> Any:
    dts = [jnp.result_type(x) for x in jax.tree_util.tree_leaves(params)]
    dts = [tree_lib.compute_dtype(d) for d in dts if jnp.issubdtype(d, jnp.floating)]
    return functools.reduce(jnp.promote_types, dts) if dts else jnp.result_type(float)


@transform
class reduce_on_plateau(GradientTransformation):
    """Multiply updates by a ``scale`` that drops by ``factor`` when the value plateaus.

    The ``value`` passed to ``update`` (e.g. the loss) is averaged over ``accumulation_size``
    calls; each average ``v`` is then an *evaluation*: it improves on the best value ``b`` when

    .. math:: v < b - \\mathrm{rtol}\\,|b| - \\mathrm{atol}

    (``|b|``, so a negative loss must decrease to count, and a loss stuck at 0 does not).
    After ``patience`` evaluations in a row without improvement, ``scale ← max(scale ·
    factor, min_scale)`` and ``cooldown`` evaluations follow during which plateaus are not
    counted. Updates are ``u ← scale · u``; place it after the learning rate in a chain
    (``chain(adam(lr), reduce_on_plateau())``).

    Same arguments and state as optax's ``contrib.reduce_on_plateau``, and the same
    reductions for a positive loss; optax's test ``v < (1 − rtol) b − atol`` counts a slightly
    *higher* negative loss as an improvement, this one does not. Unlike PyTorch's
    ``ReduceLROnPlateau`` (which waits for ``patience + 1`` bad epochs) the reduction comes on
    the ``patience``-th evaluation without improvement, as in optax.

    Args:
        factor: the reduction factor, in (0, 1).
        patience: evaluations without improvement before a reduction (``>= 1``).
        rtol: relative tolerance of an improvement, in [0, 1].
        atol: absolute tolerance of an improvement (``>= 0``; one of rtol, atol positive).
        cooldown: evaluations after a reduction during which plateaus are not counted.
        accumulation_size: number of values averaged into one evaluation (``>= 1``).
        min_scale: the scale never drops below this.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.reduce_on_plateau(factor=0.5, patience=2)
        >>> state = tx.init({"w": jnp.zeros(1)})
        >>> scales = []
        >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.0, 2.0]:
        ...     u, state = tx.update({"w": jnp.ones(1)}, state, value=loss)
        ...     scales.append(float(u["w"][0]))
        >>> scales
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]
    """

    factor: Any = 0.1
    patience: Any = 10
    rtol: Any = 1e-4
    atol: Any = 0.0
    cooldown: Any = 0
    accumulation_size: Any = 1
    min_scale: Any = 0.0

    def _check(self):
        o = "reduce_on_plateau"
        check_range(o, "factor", self.factor, low=0.0, high=1.0, low_open=True, high_open=True)
        _check_whole(o, "patience", self.patience, 1.0)
        check_range(o, "rtol", self.rtol, low=0.0, high=1.0)
        check_nonnegative(o, "atol", self.atol)
        r, a = concrete_float(self.rtol), concrete_float(self.atol)
        if r == 0.0 and a == 0.0:
            raise ValueError(f"{o}: one of rtol and atol must be positive, got rtol=0, atol=0")
        _check_whole(o, "cooldown", self.cooldown, 0.0)
        _check_whole(o, "accumulation_size", self.accumulation_size, 1.0)
        check_nonnegative(o, "min_scale", self.min_scale)

    def init(self, params):
        dt = _float_dtype(params)
        return ReduceOnPlateauState(
            scale=jnp.ones([], dt),
            best_value=jnp.full([], jnp.inf, dt),
            plateau_count=jnp.zeros([], jnp.int32),
            cooldown_count=jnp.zeros([], jnp.int32),
            count=jnp.zeros([], jnp.int32),
            avg_value=jnp.zeros([], dt),
        )

    def _evaluate(self, s: ReduceOnPlateauState) -> ReduceOnPlateauState:
        v, best = s.avg_value, s.best_value
        threshold = jnp.where(
            jnp.isinf(best), best, best - self.rtol * jnp.abs(best) - self.atol
        ).astype(best.dtype)
        improved = v < threshold
        plateau = jnp.where(improved, 0, tree_lib.safe_increment(s.plateau_count))
        in_cooldown = s.cooldown_count > 0
        reduce = jnp.logical_and(~in_cooldown, plateau >= self.patience)
        scale = jnp.where(reduce, s.scale * self.factor, s.scale)
        scale = jnp.where(in_cooldown, scale, jnp.maximum(scale, self.min_scale))
        cooldown = jnp.where(in_cooldown, s.cooldown_count - 1, jnp.where(reduce, self.cooldown, 0))
        return ReduceOnPlateauState(
            scale=scale.astype(s.scale.dtype),
            best_value=jnp.where(improved, v, best).astype(best.dtype),
            plateau_count=jnp.where(in_cooldown | reduce, 0, plateau).astype(jnp.int32),
            cooldown_count=jnp.asarray(cooldown).astype(jnp.int32),
            count=jnp.zeros([], jnp.int32),
            avg_value=jnp.zeros([], s.avg_value.dtype),
        )

    def update(self, updates, state, params=None, **extra_args):
        if "value" not in extra_args:
            raise ValueError(
                "reduce_on_plateau: update needs the monitored value, "
                "e.g. update(updates, state, params, value=loss)"
            )
        value = jnp.asarray(extra_args["value"]).astype(state.avg_value.dtype)
        count = tree_lib.safe_increment(state.count)
        avg = (state.count * state.avg_value + value) / count
        state = state._replace(count=count, avg_value=avg.astype(state.avg_value.dtype))
        state = jax.lax.cond(count >= self.accumulation_size, self._evaluate, lambda s: s, state)
        scale = state.scale
        out = jax.tree_util.tree_map(
            lambda u: None if u is None else (scale * u).astype(jnp.result_type(u)),
            updates,
            is_leaf=lambda x: x is None,
        )
        return out, state

    def _state_hyperparams(self, state: Any) -> dict:
        """The current ``scale`` (reported by :func:`gradtx.hyperparams`)."""
        return {"scale": state.scale}
