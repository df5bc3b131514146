"""Target-network updates: a slow copy of the parameters that follows the online ones, by
Polyak averaging or by a periodic hard copy."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import numerics
from gradtx.core import check_range, concrete_float

__all__ = ["incremental_update", "periodic_update"]


def incremental_update(new_tensors: Any, old_tensors: Any, step_size: Any) -> Any:
    """Move a moving average of parameters towards their latest values (Polyak averaging):
    ``θ̄ ← τ θ + (1 − τ) θ̄``.

    Each leaf is computed in the dtype of ``new`` and ``old`` together (``τ`` does not promote
    it); ``None`` leaves of ``new_tensors`` stay ``None``.

    Args:
        new_tensors: the latest parameters ``θ``.
        old_tensors: the moving average ``θ̄`` (same structure).
        step_size: ``τ ∈ [0, 1]`` (``1`` copies ``θ``, ``0`` keeps ``θ̄``).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> avg = gradtx.incremental_update({"w": jnp.array([1.0])}, {"w": jnp.array([0.0])}, 0.1)
        >>> [round(float(x), 4) for x in avg["w"]]
        [0.1]

    Reference: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging",
    SIAM J. Control Optim. 30(4), 1992; Lillicrap et al., "Continuous control with deep
    reinforcement learning", ICLR 2016 (soft target updates).
    """
    check_range("incremental_update", "step_size", step_size, low=0.0, high=1.0)
    numerics.check_structure(
        new_tensors, old_tensors, "incremental_update", "new_tensors", "old_tensors"
    )

    def f(new, old):
        if new is None:
            return None
        dtype = jnp.result_type(new, old)
        tau = jnp.asarray(step_size).astype(dtype)
        return (tau * jnp.asarray(new, dtype) + (1 - tau) * jnp.asarray(old, dtype)).astype(dtype)

    return numerics.tree_map_none(f, new_tensors, old_tensors)


def periodic_update(new_tensors: Any, old_tensors: Any, steps: Any, update_period: Any) -> Any:
    """Copy the latest parameters into a slow copy every ``K`` steps: the result is
    ``new_tensors`` when ``steps mod K = 0`` and ``old_tensors`` otherwise.

    Works under ``jit`` with a traced ``steps`` (the choice is made on device). The result
    keeps the dtypes of ``old_tensors``.

    Args:
        new_tensors: the online parameters.
        old_tensors: the target (slow) copy, same structure.
        steps: how many updates the online parameters have had (an integer, may be traced).
        update_period: ``K >= 1``, how many steps between copies.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> new, old = jnp.array([5.0]), jnp.array([1.0])
        >>> [gradtx.periodic_update(new, old, t, 3).tolist() for t in (6, 7)]
        [[5.0], [1.0]]

    Reference: Mnih et al., "Human-level control through deep reinforcement learning",
    Nature 518, 2015 (the target network updated every ``C`` steps); Grill et al.,
    "Bootstrap Your Own Latent", NeurIPS 2020.
    """
    k = concrete_float(update_period)
    if isinstance(update_period, bool | str | bytes) or (
        k is not None and not (k >= 1 and float(k).is_integer())
    ):
        raise ValueError(
            f"periodic_update: update_period must be an integer >= 1, got {update_period!r}"
        )
    numerics.check_structure(
        new_tensors, old_tensors, "periodic_update", "new_tensors", "old_tensors"
    )
    new_tensors = numerics.tree_cast_like(new_tensors, old_tensors)  # the copy keeps its dtypes
    copy = jnp.mod(steps, update_period) == 0
    return jax.lax.cond(copy, lambda: new_tensors, lambda: old_tensors)
