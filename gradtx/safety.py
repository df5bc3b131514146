"""NaN/Inf safety: skip non-finite steps, zero NaNs, and skip predicates for ``MultiSteps``.

``apply_if_finite`` wraps an optimizer and drops any step whose incoming gradient holds a NaN
or an infinity (parameters and inner state stay as they were), counting such steps; after too
many in a row it raises, sets a flag, or lets the step through, as you choose. ``zero_nans``
replaces NaNs by zeros. ``skip_not_finite`` and ``skip_large_updates`` are predicates for the
``should_skip_update_fn`` of :class:`gradtx.MultiSteps`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    _as_member,
    check_count,
    static_field,
    transform,
)

__all__ = [
    "apply_if_finite",
    "ApplyIfFiniteState",
    "zero_nans",
    "ZeroNansState",
    "ShouldSkipUpdateFunction",
    "skip_not_finite",
    "skip_large_updates",
    "all_finite",
]

_MODES = ("flag", "raise", "apply")


def all_finite(tree: Any) -> jax.Array:
    """A scalar bool: whether every element of every leaf is finite (no NaN, no ±Inf).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> bool(gradtx.all_finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.nan])}))
        False
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


class ApplyIfFiniteState(NamedTuple):
    """Counters of :class:`apply_if_finite` and the inner optimizer's state.

    ``notfinite_count``: non-finite steps in a row (0 after a finite one); ``last_finite``:
    whether the last step was finite; ``total_notfinite``: all non-finite steps so far;
    ``gave_up``: set once ``notfinite_count`` exceeded ``max_consecutive_errors``.
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    gave_up: jax.Array
    inner_state: Any


def _give_up_error(gave_up: Any, count: Any) -> None:
    if bool(gave_up):
        raise FloatingPointError(
            f"apply_if_finite: gave up after {int(count)} consecutive steps with non-finite "
            f"gradients (more than max_consecutive_errors)"
        )


@transform
class apply_if_finite(GradientTransformation):
    """Apply ``inner`` only on steps whose gradients are all finite; skip and count the others.

    On a step with a NaN or ±Inf anywhere in the incoming updates the output is zeros and the
    inner state is unchanged (so the parameters do not move); ``notfinite_count`` and
    ``total_notfinite`` count such steps. When ``notfinite_count`` exceeds
    ``max_consecutive_errors``, ``on_max_errors`` decides:

    * ``"flag"`` (default): keep skipping and set ``state.gave_up`` (check it in your loop);
    * ``"raise"``: raise ``FloatingPointError`` (inside ``jit`` through a host callback, which
      surfaces as a runtime error carrying the message);
    * ``"apply"``: let the non-finite step through, as optax does.

    Args:
        inner: the optimizer to protect (gradtx or optax).
        max_consecutive_errors: how many non-finite steps in a row are skipped (a leaf).
        on_max_errors: ``"flag"``, ``"raise"`` or ``"apply"``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.apply_if_finite(gradtx.sgd(0.1), max_consecutive_errors=3)
        >>> s = tx.init(jnp.zeros(2))
        >>> u, s = tx.update(jnp.array([1.0, jnp.nan]), s)
        >>> u.tolist(), int(s.notfinite_count), bool(s.last_finite)
        ([0.0, 0.0], 1, False)
    """

    inner: Any
    max_consecutive_errors: Any = 5
    on_max_errors: str = static_field("flag")

    def _check(self):
        object.__setattr__(self, "inner", _as_member(self.inner))
        check_count("apply_if_finite", "max_consecutive_errors", self.max_consecutive_errors)
        if self.on_max_errors not in _MODES:
            raise ValueError(
                f"apply_if_finite: on_max_errors must be one of {_MODES}, "
                f"got {self.on_max_errors!r}"
            )

    def init(self, params):
        return ApplyIfFiniteState(
            notfinite_count=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True),
            total_notfinite=jnp.zeros([], jnp.int32),
            gave_up=jnp.array(False),
            inner_state=self.inner.init(params),
        )

    def _eager_compilable(self) -> bool:
        # an eager call in "raise" mode raises FloatingPointError itself, not through jit
        return self.on_max_errors != "raise"

    def update(self, updates, state, params=None, **extra_args):
        finite = all_finite(updates)
        notfinite_count = jnp.where(
            finite, jnp.zeros([], jnp.int32), tree_lib.safe_increment(state.notfinite_count)
        )
        total = jnp.where(
            finite, state.total_notfinite, tree_lib.safe_increment(state.total_notfinite)
        )
        exhausted = notfinite_count > self.max_consecutive_errors
        apply = finite | exhausted if self.on_max_errors == "apply" else finite

        def do_update():
            return self.inner.update(updates, state.inner_state, params, **extra_args)

        def skip():  # zeros shaped like what the inner transform would output
            return tree_lib.tree_zeros_like_output(do_update)[0], state.inner_state

        if isinstance(apply, jax.core.Tracer):
            new_updates, inner_state = jax.lax.cond(apply, do_update, skip)
        else:
            new_updates, inner_state = do_update() if bool(apply) else skip()
        if self.on_max_errors == "raise":
            if isinstance(exhausted, jax.core.Tracer):
                jax.debug.callback(_give_up_error, exhausted, notfinite_count)
            else:
                _give_up_error(exhausted, notfinite_count)
        return new_updates, ApplyIfFiniteState(
            notfinite_count=notfinite_count,
            last_finite=finite,
            total_notfinite=total,
            gave_up=state.gave_up | exhausted,
            inner_state=inner_state,
        )


class ZeroNansState(NamedTuple):
    """For every leaf, whether the last update had a NaN in it."""

    found_nan: Any


@transform
class zero_nans(GradientTransformation):
    """Replace NaNs in the updates by zeros: ``u ← where(isnan(u), 0, u)``, recording which
    leaves had one.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.zero_nans()
        >>> u, s = tx.update({"w": jnp.array([jnp.nan, 2.0])}, tx.init({"w": jnp.zeros(2)}))
        >>> u["w"].tolist(), bool(s.found_nan["w"])
        ([0.0, 2.0], True)
    """

    def init(self, params):
        return ZeroNansState(found_nan=jax.tree_util.tree_map(lambda _: jnp.array(False), params))

    def update(self, updates, state, params=None, **extra_args):
        found = jax.tree_util.tree_map(lambda u: jnp.any(jnp.isnan(u)), updates)
        out = jax.tree_util.tree_map(
            lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates
        )
        return out, ZeroNansState(found_nan=found)


class ShouldSkipUpdateFunction(Protocol):
    """The type of ``should_skip_update_fn`` in :class:`gradtx.MultiSteps`:
    ``fn(updates, gradient_step, params) -> (should_skip, info)``.

    ``should_skip`` is a scalar bool (skip this micro-step's gradient); ``info`` is a pytree of
    arrays kept in the ``skip_state`` of the ``MultiSteps`` state (the same structure on every
    call). :func:`skip_not_finite` and :func:`skip_large_updates` are two such functions.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> def skip_negative_sum(updates, gradient_step, params):
        ...     total = sum(jnp.sum(u) for u in jax.tree_util.tree_leaves(updates))
        ...     return total < 0, {"total": total}
        >>> opt = gradtx.MultiSteps(gradtx.sgd(1.0), 2, should_skip_update_fn=skip_negative_sum)
        >>> state = opt.init(jnp.zeros(1))
        >>> _, state = opt.update(-jnp.ones(1), state)
        >>> float(state.skip_state["total"])
        -1.0
    """

    def __call__(self, updates: Any, gradient_step: Any, params: Any) -> tuple[Any, Any]:
        """Whether to skip these updates, and what to record."""


def skip_not_finite(
    updates: Any, gradient_step: Any, params: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A ``should_skip_update_fn`` for :class:`gradtx.MultiSteps`: skip a micro-step whose
    gradient holds a NaN or ±Inf.

    Returns ``(should_skip, {"should_skip": ..., "num_not_finite": ...})``, the second part kept
    in the ``skip_state`` of the ``MultiSteps`` state.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> skip, info = gradtx.skip_not_finite(jnp.array([1.0, jnp.inf]), 0, None)
        >>> bool(skip), int(info["num_not_finite"])
        (True, 1)
    """
    del gradient_step, params
    counts = [
        jnp.sum(~jnp.isfinite(x)).astype(jnp.int32) for x in jax.tree_util.tree_leaves(updates)
    ]
    num = sum(counts) if counts else jnp.zeros([], jnp.int32)
    should_skip = num > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": jnp.asarray(num, jnp.int32)}


def skip_large_updates(
    updates: Any, gradient_step: Any, params: Any, max_squared_norm: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A ``should_skip_update_fn`` for :class:`gradtx.MultiSteps`: skip a micro-step whose
    squared global norm ``Σ ||g_i||²`` exceeds ``max_squared_norm`` (or is not finite).

    Bind the threshold with ``functools.partial(skip_large_updates, max_squared_norm=...)``.
    Returns ``(should_skip, {"should_skip": ..., "norm_squared": ...})``.

    Example:
        >>> import functools, jax.numpy as jnp, gradtx
        >>> fn = functools.partial(gradtx.skip_large_updates, max_squared_norm=10.0)
        >>> skip, info = fn(jnp.array([3.0, 4.0]), 0, None)
        >>> bool(skip), float(info["norm_squared"])
        (True, 25.0)
    """
    del gradient_step, params
    norm_sq = tree_lib.tree_l2_norm(updates, squared=True)
    should_skip = ~(norm_sq < max_squared_norm)  # NaN norms are skipped too
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_sq}
