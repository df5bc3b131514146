"""Averaging of parameters: exponential (Polyak/EMA), uniform (SWA), and lookahead.

``param_ema`` and ``swa`` wrap an optimizer, pass its updates through unchanged, and keep a
running average of the parameters the updates lead to (``θ + u``) in
``state.averaged_params``: evaluate with the average, train with the raw parameters.
``lookahead`` keeps slow and fast weights and pulls the slow ones towards the fast ones every
``sync_period`` steps.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    _as_member,
    check_count,
    check_decay,
    check_dtype,
    check_range,
    static_field,
    transform,
)

__all__ = [
    "param_ema",
    "ParamEmaState",
    "swa",
    "SwaState",
    "lookahead",
    "LookaheadParams",
    "LookaheadState",
]


def _average_init(params: Any, dtype: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda p: jnp.asarray(p).astype(
            dtype if dtype is not None else tree_lib.compute_dtype(jnp.result_type(p))
        ),
        params,
    )


def _next_params(owner: str, params: Any, updates: Any) -> Any:
    if params is None:
        raise ValueError(f"{owner}: update needs params (call update(updates, state, params))")
    tree_lib.check_structure(updates, params, owner, "updates", "params")
    return jax.tree_util.tree_map(lambda p, u: p + u, params, updates)


class ParamEmaState(NamedTuple):
    """Steps taken, the exponential average of the parameters, and the inner state."""

    count: jax.Array
    averaged_params: Any
    inner_state: Any


@transform
class param_ema(GradientTransformation):
    """Exponential moving average of the parameters (Polyak averaging with forgetting).

    The inner optimizer's updates pass through unchanged; with ``θ_{t+1} = θ_t + u_t`` the
    state keeps ``θ̄_0 = θ_0``, ``θ̄_{t+1} = β θ̄_t + (1 − β) θ_{t+1}`` in
    ``state.averaged_params``.

    Args:
        inner: the optimizer (gradtx or optax).
        decay: ``β`` in [0, 1) (a leaf).
        accumulator_dtype: dtype of the average (default: the params' dtype, float32 for
            float16/bfloat16 params).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.param_ema(gradtx.sgd(1.0), decay=0.5)
        >>> p = jnp.array([0.0])
        >>> s = tx.init(p)
        >>> u, s = tx.update(jnp.array([-2.0]), s, p)  # θ: 0 -> 2; average 0.5·0 + 0.5·2
        >>> s.averaged_params.tolist()
        [1.0]

    Reference: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging",
    SIAM J. Control Optim. 1992.
    """

    inner: Any
    decay: Any = 0.999
    accumulator_dtype: Any = static_field(None)

    def _check(self):
        object.__setattr__(self, "inner", _as_member(self.inner))
        check_decay("param_ema", "decay", self.decay)
        object.__setattr__(
            self,
            "accumulator_dtype",
            check_dtype("param_ema", "accumulator_dtype", self.accumulator_dtype),
        )

    def init(self, params):
        return ParamEmaState(
            count=jnp.zeros([], jnp.int32),
            averaged_params=_average_init(params, self.accumulator_dtype),
            inner_state=self.inner.init(params),
        )

    def update(self, updates, state, params=None, **extra_args):
        new, inner = self.inner.update(updates, state.inner_state, params, **extra_args)
        theta = _next_params("param_ema", params, new)
        b = self.decay
        avg = jax.tree_util.tree_map(
            lambda a, t: (b * a + (1 - b) * t.astype(a.dtype)).astype(a.dtype),
            state.averaged_params,
            theta,
        )
        return new, ParamEmaState(
            count=tree_lib.safe_increment(state.count), averaged_params=avg, inner_state=inner
        )


class SwaState(NamedTuple):
    """Steps taken, how many iterates are in the average, the average, and the inner state."""

    count: jax.Array
    n_averaged: jax.Array
    averaged_params: Any
    inner_state: Any


@transform
class swa(GradientTransformation):
    """Stochastic weight averaging: the uniform average of the parameter iterates.

    The inner updates pass through unchanged. The parameters after step ``s = 1, 2, …`` join
    the average when ``s >= start`` and ``s − start`` is a multiple of ``every``:
    ``n ← n + 1``, ``θ̄ ← θ̄ + (θ_s − θ̄)/n`` (so ``θ̄`` is the mean of the iterates taken).
    Before the first one ``averaged_params`` holds the initial parameters.

    Args:
        inner: the optimizer (gradtx or optax).
        start: the first step whose parameters are averaged (an int leaf, >= 1).
        every: average every ``every``-th step from ``start`` on (an int leaf, >= 1).
        accumulator_dtype: dtype of the average (default: the params' dtype, float32 for
            float16/bfloat16 params).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.swa(gradtx.sgd(1.0))
        >>> p = jnp.array([0.0])
        >>> s = tx.init(p)
        >>> for g in [-1.0, -1.0, -1.0]:  # θ = 1, 2, 3
        ...     u, s = tx.update(jnp.array([g]), s, p)
        ...     p = gradtx.apply_updates(p, u)
        >>> s.averaged_params.tolist(), int(s.n_averaged)
        ([2.0], 3)

    Reference: Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
    Generalization", UAI 2018.
    """

    inner: Any
    start: Any = 1
    every: Any = 1
    accumulator_dtype: Any = static_field(None)

    def _check(self):
        object.__setattr__(self, "inner", _as_member(self.inner))
        check_count("swa", "start", self.start, low=1)
        check_count("swa", "every", self.every, low=1)
        object.__setattr__(
            self,
            "accumulator_dtype",
            check_dtype("swa", "accumulator_dtype", self.accumulator_dtype),
        )

    def init(self, params):
        return SwaState(
            count=jnp.zeros([], jnp.int32),
            n_averaged=jnp.zeros([], jnp.int32),
            averaged_params=_average_init(params, self.accumulator_dtype),
            inner_state=self.inner.init(params),
        )

    def update(self, updates, state, params=None, **extra_args):
        new, inner = self.inner.update(updates, state.inner_state, params, **extra_args)
        theta = _next_params("swa", params, new)
        step = tree_lib.safe_increment(state.count)
        take = (step >= self.start) & ((step - self.start) % self.every == 0)
        n = jnp.where(take, tree_lib.safe_increment(state.n_averaged), state.n_averaged)
        denom = jnp.maximum(n, 1)
        avg = jax.tree_util.tree_map(
            lambda a, t: jnp.where(
                take, a + (t.astype(a.dtype) - a) / denom.astype(tree_lib.real_dtype(a.dtype)), a
            ).astype(a.dtype),
            state.averaged_params,
            theta,
        )
        return new, SwaState(count=step, n_averaged=n, averaged_params=avg, inner_state=inner)


class LookaheadParams(NamedTuple):
    """The parameters lookahead optimises: the fast weights (where gradients are taken) and
    the slow weights (the ones to evaluate)."""

    fast: Any
    slow: Any

    @classmethod
    def init_synced(cls, params: Any) -> LookaheadParams:
        """Fast and slow weights both equal to ``params``."""
        return cls(fast=params, slow=params)


class LookaheadState(NamedTuple):
    """The fast optimizer's state and the steps since the last synchronisation."""

    fast_state: Any
    steps_since_sync: jax.Array


@transform
class lookahead(GradientTransformation):
    """Lookahead (Zhang et al., 2019): k fast steps forward, then one step back towards them.

    The params are :class:`LookaheadParams` ``(φ, θ)``; the gradients are taken at the fast
    weights ``φ``. Each step ``φ' = φ + fast_optimizer(g)``; every ``k = sync_period``-th step
    the slow weights move ``θ ← θ + α (φ' − θ)`` and the fast ones restart from them,
    ``φ ← θ``; otherwise ``φ ← φ'`` and ``θ`` stays. The output is the change of both, as
    a :class:`LookaheadParams`, for :func:`gradtx.apply_updates`.

    ``init`` takes the :class:`LookaheadParams` (or, as in optax, the fast weights alone).

    Args:
        fast_optimizer: the inner optimizer (gradtx or optax).
        sync_period: ``k >= 1`` (an int leaf).
        slow_step_size: ``α`` in [0, 1] (a leaf).
        reset_state: re-initialise the fast optimizer's state at each synchronisation.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.lookahead(gradtx.sgd(1.0), sync_period=2, slow_step_size=0.5)
        >>> p = gradtx.LookaheadParams.init_synced(jnp.array([0.0]))
        >>> s = tx.init(p)
        >>> for _ in range(2):  # φ: 0 -> 1 -> 2, then θ = 0 + 0.5·(2 − 0) = 1 = φ
        ...     u, s = tx.update(jnp.array([-1.0]), s, p)
        ...     p = gradtx.apply_updates(p, u)
        >>> p.fast.tolist(), p.slow.tolist()
        ([1.0], [1.0])

    Reference: Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step
    back", NeurIPS 2019.
    """

    fast_optimizer: Any
    sync_period: Any = 5
    slow_step_size: Any = 0.5
    reset_state: bool = static_field(False)
    _updates_like_params = False  # params are LookaheadParams(fast, slow)

    def _check(self):
        object.__setattr__(self, "fast_optimizer", _as_member(self.fast_optimizer))
        check_count("lookahead", "sync_period", self.sync_period, low=1)
        check_range("lookahead", "slow_step_size", self.slow_step_size, low=0.0, high=1.0)

    def init(self, params):
        # As in optax, params without a ``fast`` part are taken to be the fast weights alone
        # (the placeholder params of ``tree_map_params`` included); ``update`` needs both.
        fast = params.fast if isinstance(params, LookaheadParams) else getattr(params, "fast", None)
        if fast is None:
            fast = params
        return LookaheadState(
            fast_state=self.fast_optimizer.init(fast),
            steps_since_sync=jnp.zeros([], jnp.int32),
        )

    def update(self, updates, state, params=None, **extra_args):
        if not isinstance(params, LookaheadParams):
            raise TypeError(
                "lookahead: update needs params as gradtx.LookaheadParams (fast, slow), "
                f"got {type(params).__name__}"
            )
        fast_updates, fast_state = self.fast_optimizer.update(
            updates, state.fast_state, params.fast, **extra_args
        )
        sync = state.steps_since_sync == self.sync_period - 1
        a = self.slow_step_size

        tmap = jax.tree_util.tree_map
        phi_next = tmap(lambda phi, u: phi + u, params.fast, fast_updates)
        theta_next = tmap(
            lambda theta, phi: jnp.where(sync, theta + a * (phi - theta), theta),
            params.slow,
            phi_next,
        )
        phi_out = tmap(lambda phi, theta: jnp.where(sync, theta, phi), phi_next, theta_next)
        d_fast = tmap(
            lambda new, old, u: (new - old).astype(jnp.result_type(u)),
            phi_out,
            params.fast,
            fast_updates,
        )
        d_slow = tmap(
            lambda new, old, u: (new - old).astype(jnp.result_type(u)),
            theta_next,
            params.slow,
            fast_updates,
        )
        if self.reset_state:
            fresh = self.fast_optimizer.init(tree_lib.tree_add(params.fast, d_fast))
            fast_state = jax.tree_util.tree_map(
                lambda cur, new: jnp.where(sync, new, cur).astype(jnp.result_type(cur)),
                fast_state,
                fresh,
            )
        steps = (state.steps_since_sync + 1) % self.sync_period
        return LookaheadParams(fast=d_fast, slow=d_slow), LookaheadState(
            fast_state=fast_state, steps_since_sync=jnp.asarray(steps, jnp.int32)
        )
