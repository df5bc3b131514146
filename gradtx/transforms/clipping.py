"""Gradient clipping: element-wise, by global norm, and by per-block RMS."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import EmptyState, GradientTransformation, check_range, transform
from gradtx.numerics import is_none as _none

__all__ = ["clip", "clip_by_global_norm", "clip_by_block_rms"]


@transform
class clip(GradientTransformation):
    """Clip every element to ``[−c, c]``: ``u ← clip(u, −c, c)`` (real-valued updates).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> gradtx.clip(1.0).update(jnp.array([-3.0, 0.5]), gradtx.EmptyState())[0].tolist()
        [-1.0, 0.5]

    Reference: Mikolov, "Statistical Language Models Based on Neural Networks", PhD thesis,
    Brno University of Technology, 2012 (clipping gradients by value).
    """

    max_delta: Any

    def _check(self):
        check_range("clip", "max_delta", self.max_delta, low=0.0)

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        c = self.max_delta
        for u in jax.tree_util.tree_leaves(updates):
            if jnp.iscomplexobj(u):
                raise TypeError(
                    "clip: element-wise clipping is defined for real updates only, got "
                    f"{jnp.result_type(u)}; use clip_by_global_norm or clip_by_block_rms"
                )
        out = jax.tree_util.tree_map(
            lambda u: None if u is None else jnp.clip(u, -c, c).astype(u.dtype),
            updates,
            is_leaf=_none,
        )
        return out, state


@transform
class clip_by_global_norm(GradientTransformation):
    """Rescale all updates together so their global norm is at most ``c``:
    ``u ← u · min(1, c / ‖u‖)`` with ``‖u‖ = sqrt(Σ_i ‖u_i‖²)`` over every parameter.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.clip_by_global_norm(1.0)
        >>> u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(None))
        >>> [round(float(x), 4) for x in u]
        [0.6, 0.8]

    Reference: Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
    networks", ICML 2013.
    """

    max_norm: Any

    def _check(self):
        check_range("clip_by_global_norm", "max_norm", self.max_norm, low=0.0, low_open=True)

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        norm = tree_lib.global_norm(updates)
        factor = jnp.where(norm < self.max_norm, 1.0, self.max_norm / jnp.where(norm == 0, 1, norm))
        return tree_lib.tree_scale(factor, updates), state


@transform
class clip_by_block_rms(GradientTransformation):
    """Clip each parameter block (leaf) by its RMS: ``u_i ← u_i / max(1, rms(u_i) / c)``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> u, _ = gradtx.clip_by_block_rms(1.0).update(jnp.array([2.0, 2.0]), gradtx.EmptyState())
        >>> u.tolist()
        [1.0, 1.0]

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018, §6 (update clipping by block RMS).
    """

    threshold: Any

    def _check(self):
        check_range("clip_by_block_rms", "threshold", self.threshold, low=0.0, low_open=True)

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        def f(u):
            if u is None:
                return None
            cd = tree_lib.compute_dtype(u.dtype)
            rms = jnp.sqrt(jnp.mean(tree_lib.abs_sq(u.astype(cd))))
            return (u.astype(cd) / jnp.maximum(1.0, rms / self.threshold)).astype(u.dtype)

        return jax.tree_util.tree_map(f, updates, is_leaf=_none), state
