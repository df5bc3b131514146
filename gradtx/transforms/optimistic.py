"""Optimistic gradients: extrapolate with the previous gradient (negative momentum)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import GradientTransformation, check_range, hyper, transform
from gradtx.numerics import is_none as _none

__all__ = ["scale_by_optimistic_gradient", "ScaleByOptimisticGradientState"]


class ScaleByOptimisticGradientState(NamedTuple):
    """Whether no step has been taken yet, the previous gradient, and the step count."""

    is_initial_step: jax.Array
    previous_gradient: Any
    count: jax.Array


@transform
class scale_by_optimistic_gradient(GradientTransformation):
    """Generalised optimistic gradient: ``u_t = (α + β) g_t − β g_{t−1}``.

    With ``α = β = 1`` this is the optimistic gradient step ``2 g_t − g_{t−1}`` (Mokhtari,
    Ozdaglar & Pattathil, 2020, eq. (5), the OGDA update ``x_{k+1} = x_k − 2η g_k + η g_{k−1}``);
    general ``α, β`` give their generalised OGDA (Section 3). At the first step there is no
    previous gradient and ``g_{−1} = g_0`` (the usual ``x_{−1} = x_0``), so ``u_0 = α g_0``.

    Args:
        alpha: ``α`` (a leaf, or a schedule of the step count).
        beta: ``β``, the weight of the negative momentum (a leaf, or a schedule).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_optimistic_gradient()
        >>> s = tx.init(jnp.zeros(1))
        >>> u, s = tx.update(jnp.array([1.0]), s)
        >>> u, s = tx.update(jnp.array([3.0]), s)
        >>> u.tolist()  # 2·3 − 1
        [5.0]

    Reference: Mokhtari, Ozdaglar & Pattathil, "A Unified Analysis of Extra-gradient and
    Optimistic Gradient Methods for Saddle Point Problems: Proximal Point Approach",
    AISTATS 2020.
    """

    alpha: Any = 1.0
    beta: Any = 1.0

    def _check(self):
        check_range("scale_by_optimistic_gradient", "alpha", self.alpha)
        check_range("scale_by_optimistic_gradient", "beta", self.beta)

    def init(self, params):
        return ScaleByOptimisticGradientState(
            is_initial_step=jnp.array(True),
            previous_gradient=tree_lib.tree_zeros_like(params),
            count=jnp.zeros([], jnp.int32),
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(
            updates, state.previous_gradient, "scale_by_optimistic_gradient", "updates", "state"
        )
        a, b = hyper(self.alpha, state.count), hyper(self.beta, state.count)

        def f(g, prev):
            if g is None:
                return None
            prev = jnp.where(state.is_initial_step, g, prev.astype(g.dtype))
            return ((a + b) * g - b * prev).astype(g.dtype)

        out = jax.tree_util.tree_map(f, updates, state.previous_gradient, is_leaf=_none)
        new_prev = tree_lib.tree_cast_like(updates, state.previous_gradient)
        return out, ScaleByOptimisticGradientState(
            is_initial_step=jnp.array(False),
            previous_gradient=new_prev,
            count=tree_lib.safe_increment(state.count),
        )
