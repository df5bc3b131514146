"""Decoupled weight decay."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import numerics as tree_lib
from gradtx.core import (
    CountState,
    EmptyState,
    GradientTransformation,
    broadcast_mask,
    check_nonnegative,
    freeze_mask,
    hyper,
    resolve_mask,
    static_field,
    transform,
)

__all__ = ["add_decayed_weights", "AddDecayedWeightsState"]

AddDecayedWeightsState = EmptyState  # optax's name for the state of ``add_decayed_weights``


@transform
class add_decayed_weights(GradientTransformation):
    """Add ``λ θ`` to the updates: ``u ← u + λ θ`` (decoupled weight decay when placed after the
    adaptive scaling and before the learning rate, as in AdamW).

    Args:
        weight_decay: ``λ >= 0`` (a leaf, or a schedule of the step count).
        mask: which parameters decay: a pytree of bools with the params' structure, or a
            function of the params returning one. ``None`` decays every parameter.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.add_decayed_weights(0.1, mask={"w": True, "b": False})
        >>> p = {"w": jnp.ones(1), "b": jnp.ones(1)}
        >>> u, _ = tx.update({"w": jnp.zeros(1), "b": jnp.zeros(1)}, tx.init(p), p)
        >>> round(float(u["w"][0]), 4), float(u["b"][0])
        (0.1, 0.0)

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    weight_decay: Any = 0.0
    mask: Any = static_field(None)

    def _check(self):
        check_nonnegative("add_decayed_weights", "weight_decay", self.weight_decay)
        object.__setattr__(self, "mask", freeze_mask(self.mask))

    def init(self, params):
        if callable(self.weight_decay):
            return CountState(count=jnp.zeros([], jnp.int32))
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                "add_decayed_weights: update needs params (call update(updates, state, params))"
            )
        tree_lib.check_structure(updates, params, "add_decayed_weights", "updates", "params")
        count = state.count if isinstance(state, CountState) else None
        wd = hyper(self.weight_decay, count)
        mask = resolve_mask(self.mask, params)
        mask = broadcast_mask(mask, params, "add_decayed_weights")

        wd = tree_lib.Scalar(wd)

        def f(u, p, m):
            if u is None:
                return None
            if isinstance(m, bool | np.bool_) and not m:
                return u
            u = tree_lib.as_array(u)
            decayed = lax.add(u, tree_lib.smul(tree_lib.cast(p, u.dtype), wd))
            if isinstance(m, bool | np.bool_):
                return decayed
            return jnp.where(m, decayed, u).astype(u.dtype)

        out = jax.tree_util.tree_map(f, updates, params, mask, is_leaf=lambda x: x is None)
        if count is not None:
            state = CountState(count=tree_lib.safe_increment(count))
        return out, state
