"""Gradient accumulation: ``MultiSteps`` (k micro-batches make one optimizer step) and
``apply_every``.

``MultiSteps`` averages (or sums) the gradients of ``k`` micro-batches and applies the inner
optimizer once to the result, so ``k`` micro-batches of size ``b`` give the step one batch of
size ``k·b`` would give; between steps it returns zero updates and leaves the inner state alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    _as_member,
    check_count,
    check_dtype,
    static_field,
    transform,
)
from gradtx.safe_math import _cond

__all__ = ["MultiSteps", "MultiStepsState", "apply_every", "ApplyEveryState"]


class MultiStepsState(NamedTuple):
    """``mini_step``: micro-steps accumulated since the last optimizer step; ``gradient_step``:
    optimizer steps taken; ``inner_opt_state``; ``acc_grads``: the running mean (or sum) of
    the micro-batch gradients; ``skip_state``: what the skip predicate last returned."""

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_opt_state: Any
    acc_grads: Any
    skip_state: Any = ()


def _acc_dtype(x: Any, dtype: Any) -> Any:
    return dtype if dtype is not None else tree_lib.compute_dtype(jnp.result_type(x))


@transform
class MultiSteps(GradientTransformation):
    """Accumulate gradients over ``k`` micro-steps, then take one step of ``opt``.

    With ``use_grad_mean=True`` the accumulator is the running mean
    ``A ← A + (g − A)/(j + 1)`` at micro-step ``j = 0 … k−1`` (so ``A = (1/k) Σ_j g_j``), else
    the sum ``A ← A + g``. On the ``k``-th micro-step the output is ``opt(A)`` and the
    accumulator is reset; on the others the output is zero and ``opt``'s state does not change.
    ``k = every_k_schedule(gradient_step)`` may change with the number of optimizer steps.
    A micro-step for which ``should_skip_update_fn(updates, gradient_step, params)`` says skip
    outputs zeros and leaves everything but ``skip_state`` unchanged.

    Args:
        opt: the inner optimizer (gradtx or optax).
        every_k_schedule: ``k`` (an int leaf), or a function of the optimizer step count.
        use_grad_mean: average (True) or sum (False) the micro-batch gradients.
        should_skip_update_fn: e.g. :func:`gradtx.skip_not_finite`; returns
            ``(should_skip, info)`` and ``info`` is kept as ``skip_state``.
        accumulator_dtype: dtype of the accumulator (default: the params' dtype, float32 for
            float16/bfloat16 params).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.MultiSteps(gradtx.sgd(1.0), every_k_schedule=2)
        >>> s = tx.init(jnp.zeros(1))
        >>> u, s = tx.update(jnp.array([1.0]), s)
        >>> u.tolist(), bool(tx.has_updated(s))
        ([0.0], False)
        >>> u, s = tx.update(jnp.array([3.0]), s)  # the mean of 1 and 3, times -1
        >>> u.tolist(), bool(tx.has_updated(s))
        ([-2.0], True)

    Reference: gradient accumulation as in optax.MultiSteps and PyTorch training loops.
    """

    opt: Any
    every_k_schedule: Any = 1
    use_grad_mean: bool = static_field(True)
    should_skip_update_fn: Callable[..., Any] | None = static_field(None)
    accumulator_dtype: Any = static_field(None)

    def _check(self):
        object.__setattr__(self, "opt", _as_member(self.opt))
        if not callable(self.every_k_schedule):
            check_count("MultiSteps", "every_k_schedule", self.every_k_schedule, low=1)
        object.__setattr__(
            self,
            "accumulator_dtype",
            check_dtype("MultiSteps", "accumulator_dtype", self.accumulator_dtype),
        )
        if self.should_skip_update_fn is not None and not callable(self.should_skip_update_fn):
            raise TypeError(
                f"MultiSteps: should_skip_update_fn must be callable or None, "
                f"got {self.should_skip_update_fn!r}"
            )

    def _k(self, gradient_step: jax.Array) -> jax.Array:
        k = self.every_k_schedule
        return k(gradient_step) if callable(k) else k

    def init(self, params):
        skip_state = ()
        if self.should_skip_update_fn is not None:
            zeros = tree_lib.tree_zeros_like(params)
            _, skip_state = self.should_skip_update_fn(zeros, jnp.zeros([], jnp.int32), params)
        return MultiStepsState(
            mini_step=jnp.zeros([], jnp.int32),
            gradient_step=jnp.zeros([], jnp.int32),
            inner_opt_state=self.opt.init(params),
            acc_grads=jax.tree_util.tree_map(
                lambda p: tree_lib.full_like(p, 0, _acc_dtype(p, self.accumulator_dtype)), params
            ),
            skip_state=skip_state,
        )

    def gradient_transformation(self) -> MultiSteps:
        """This transform itself (optax's ``MultiSteps.gradient_transformation()`` spelling)."""
        return self

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """Whether the last call to ``update`` took an optimizer step."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.acc_grads, "MultiSteps", "updates", "accumulator")
        skip_state = state.skip_state
        should_skip = jnp.array(False)
        if self.should_skip_update_fn is not None:
            should_skip, skip_state = self.should_skip_update_fn(
                updates, state.gradient_step, params
            )
        j = state.mini_step
        if self.use_grad_mean:
            acc = jax.tree_util.tree_map(
                lambda a, g: (a + (g.astype(a.dtype) - a) / (j + 1).astype(a.dtype)).astype(
                    a.dtype
                ),
                state.acc_grads,
                updates,
            )
        else:
            acc = jax.tree_util.tree_map(
                lambda a, g: (a + g.astype(a.dtype)).astype(a.dtype), state.acc_grads, updates
            )
        k = self._k(state.gradient_step)
        emit = j >= k - 1

        def step():
            grads = tree_lib.tree_cast_like(acc, updates)
            out, inner = self.opt.update(grads, state.inner_opt_state, params, **extra_args)
            return (
                tree_lib.tree_cast_like(out, updates),
                MultiStepsState(
                    mini_step=jnp.zeros([], jnp.int32),
                    gradient_step=tree_lib.safe_increment(state.gradient_step),
                    inner_opt_state=inner,
                    acc_grads=tree_lib.tree_zeros_like(acc),
                    skip_state=skip_state,
                ),
            )

        def accumulate():
            return tree_lib.tree_zeros_like(updates), MultiStepsState(
                mini_step=tree_lib.safe_increment(j),
                gradient_step=state.gradient_step,
                inner_opt_state=state.inner_opt_state,
                acc_grads=acc,
                skip_state=skip_state,
            )

        def skipped():
            return tree_lib.tree_zeros_like(updates), state._replace(skip_state=skip_state)

        def not_skipped():
            return _cond(emit, step, accumulate)

        return _cond(should_skip, skipped, not_skipped)


class ApplyEveryState(NamedTuple):
    """Steps taken and the sum of the updates since the last emitted one."""

    count: jax.Array
    grad_acc: Any


@transform
class apply_every(GradientTransformation):
    """Sum updates over ``k`` steps and emit the sum every ``k``-th step (zeros otherwise).

    At step ``t = 0, 1, …``: ``A ← u`` when ``t mod k = 0`` else ``A ← A + u``; the output is
    ``A`` when ``t mod k = k − 1`` and zero otherwise. Unlike :class:`MultiSteps` it sits inside
    a chain and accumulates whatever reaches it (usually the final updates).

    Args:
        k: the period (an int leaf, >= 1).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.apply_every(2)
        >>> s = tx.init(jnp.zeros(1))
        >>> u, s = tx.update(jnp.array([1.0]), s)
        >>> u, s = tx.update(jnp.array([2.0]), s)
        >>> u.tolist()
        [3.0]
    """

    k: Any = 1

    def _check(self):
        check_count("apply_every", "k", self.k, low=1)

    def init(self, params):
        return ApplyEveryState(
            count=jnp.zeros([], jnp.int32), grad_acc=tree_lib.tree_zeros_like(params)
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.grad_acc, "apply_every", "updates", "accumulator")
        phase = state.count % self.k
        keep = phase != 0
        acc = jax.tree_util.tree_map(
            lambda a, u: (jnp.where(keep, a, jnp.zeros_like(a)) + u).astype(a.dtype),
            state.grad_acc,
            updates,
        )
        emit = phase == self.k - 1
        out = jax.tree_util.tree_map(
            lambda a, u: jnp.where(emit, a, jnp.zeros_like(a)).astype(jnp.result_type(u)),
            acc,
            updates,
        )
        # Near the int32 limit the count steps back by a multiple of k (same phase), so it
        # neither wraps nor stops the cycle as a saturating count would.
        near_limit = state.count >= jnp.iinfo(jnp.int32).max - self.k
        count = jnp.where(near_limit, state.count % self.k + 1, state.count + 1)
        return out, ApplyEveryState(count=count.astype(state.count.dtype), grad_acc=acc)
