"""Memory-light second moments: Adafactor's factored RMS and SM3's cover-set accumulators.

For an ``n × m`` matrix both keep ``O(n + m)`` numbers instead of Adam's ``n · m``. Arithmetic is
carried out in at least float32 (:func:`gradtx.numerics.compute_dtype`) and the small statistics are
stored in that dtype, so zero gradients in float16/bfloat16 give zero updates, not NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    check_count,
    check_decay,
    check_nonnegative,
    check_range,
    static_field,
    transform,
)
from gradtx.numerics import is_none as _none
from gradtx.numerics import tree_map_none as _map
from gradtx.safe_math import _saturate

__all__ = ["scale_by_factored_rms", "scale_by_sm3", "FactoredState", "ScaleBySM3State"]


def _stat_dtype(x: Any) -> Any:
    """Dtype of second-moment statistics: real, and at least float32."""
    return tree_lib.compute_dtype(tree_lib.real_dtype(jnp.result_type(x)))


def _decay_rate_pow(step: jax.Array, exponent: Any = 0.8) -> jax.Array:
    """Adafactor's second-moment decay ``β̂_2t = 1 − t^(−c)`` with ``t = step + 1``."""
    t = jnp.asarray(step, jnp.result_type(float)) + 1  # in float: step + 1 wraps at 2^31 - 1
    return 1.0 - t ** (-exponent)


# ----------------------------------------------------------------------------------------------
# Adafactor's factored second moment.


class FactoredState(NamedTuple):
    """Step count; per parameter the row and column statistics ``v_row``, ``v_col`` (factored
    arrays) or the full second moment ``v`` (the others). Unused slots hold a 0-d zero."""

    count: jax.Array
    v_row: Any
    v_col: Any
    v: Any


def _factored_axes(shape: tuple, factored: bool, min_dim: int) -> tuple[int, int] | None:
    """The (second-largest, largest) axes to factor over, or ``None`` to keep a full moment."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape, kind="stable")
    small, large = int(order[-2]), int(order[-1])
    if shape[small] < min_dim:
        return None
    return small, large


def _finite_mean(x: jax.Array, axis: int) -> jax.Array:
    """``mean(x, axis)`` (kept as a size-1 axis) of non-negative ``x``; where the plain sum
    overflows (saturated statistics) the mean is taken as ``Σ x / n``, which cannot."""
    mean = jnp.mean(x, axis=axis, keepdims=True)
    if x.shape[axis] <= 1:
        return mean
    safe = _saturate(jnp.sum(x / x.shape[axis], axis=axis, keepdims=True))  # may round up
    return jnp.where(mean <= jnp.finfo(mean.dtype).max, mean, safe)


@transform
class scale_by_factored_rms(GradientTransformation):
    """Adafactor's scaling by a factored second moment (Shazeer & Stern, 2018, Algorithms 4–5).

    For a matrix ``G`` (the two largest axes of an array, when both have at least
    ``min_dim_size_to_factor`` entries), with ``β̂_t = 1 − t^(−c)`` (``c = decay_rate``,
    ``t`` counted from ``step_offset``) and ``ε1 = epsilon``:

    .. math::
        R_t = β̂_t R_{t-1} + (1-β̂_t)\\,\\mathrm{mean}_{cols}(G_t^2 + ε_1),\\quad
        C_t = β̂_t C_{t-1} + (1-β̂_t)\\,\\mathrm{mean}_{rows}(G_t^2 + ε_1),\\\\
        \\hat V_t = R_t C_t / \\mathrm{mean}(R_t),\\quad U_t = G_t / \\sqrt{\\hat V_t}.

    (The paper writes sums: ``V̂ = R C / (1ᵀ R)``; with means the result is the same.) Other
    arrays keep a full ``V_t = β̂_t V_{t−1} + (1 − β̂_t)(G_t² + ε1)`` (Algorithm 5 line 6).
    The state of an ``n × m`` matrix is ``n + m`` numbers.

    ``R``, ``C`` and ``V`` saturate at the largest finite value of their dtype (``|g| ≳ 1.8e19``
    in float32) instead of overflowing, and ``mean(R)`` of saturated rows is taken without
    overflow; see :class:`gradtx.scale_by_adam` for what a capped moment does to the step.

    Args:
        factored: factor the second moment of arrays with two large enough axes.
        decay_rate: the exponent ``c`` of the decay schedule (0.8 in the paper).
        step_offset: subtracted from the step count (e.g. the first step of a fine-tune).
        min_dim_size_to_factor: factor only if both axes have at least this size.
        epsilon: ``ε1``, added to the squared gradient.
        decay_rate_fn: ``(step, decay_rate) -> β̂`` (default ``1 − (step + 1)^(−decay_rate)``).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_factored_rms(min_dim_size_to_factor=2)
        >>> g = jnp.array([[1.0, 2.0], [3.0, 4.0]])
        >>> state = tx.init(g)
        >>> state.v_row.shape, state.v_col.shape
        ((2,), (2,))
        >>> u, _ = tx.update(g, state, g)
        >>> [round(float(x), 4) for x in u.ravel()]
        [0.7746, 1.0954, 1.0392, 0.9798]

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018.
    """

    factored: bool = static_field(True)
    decay_rate: Any = 0.8
    step_offset: Any = 0
    min_dim_size_to_factor: int = static_field(128)
    epsilon: Any = 1e-30
    decay_rate_fn: Callable[[Any, Any], Any] = static_field(_decay_rate_pow)

    def _check(self):
        check_nonnegative("scale_by_factored_rms", "decay_rate", self.decay_rate)
        check_nonnegative("scale_by_factored_rms", "epsilon", self.epsilon)
        check_count("scale_by_factored_rms", "step_offset", self.step_offset)
        m = self.min_dim_size_to_factor
        if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1:
            raise ValueError(
                f"scale_by_factored_rms: min_dim_size_to_factor must be an int >= 1, got {m!r}"
            )
        if not callable(self.decay_rate_fn):
            raise TypeError(
                f"scale_by_factored_rms: decay_rate_fn must be callable, got {self.decay_rate_fn!r}"
            )

    def _axes(self, x: Any) -> tuple[int, int] | None:
        return _factored_axes(jnp.shape(x), self.factored, self.min_dim_size_to_factor)

    def init(self, params):
        def slots(p):
            if p is None:
                return None
            dt, shape = _stat_dtype(p), jnp.shape(p)
            axes = self._axes(p)
            empty = jnp.zeros((), dt)
            if axes is None:
                return empty, empty, tree_lib.full_like(p, 0, dt)
            small, large = axes
            row = jnp.zeros(tuple(n for i, n in enumerate(shape) if i != large), dt)
            col = jnp.zeros(tuple(n for i, n in enumerate(shape) if i != small), dt)
            return row, col, empty

        leaves, treedef = jax.tree_util.tree_flatten(params, is_leaf=_none)
        triples = [slots(p) for p in leaves]
        rows, cols, full = (
            jax.tree_util.tree_unflatten(treedef, [None if t is None else t[i] for t in triples])
            for i in range(3)
        )
        return FactoredState(count=jnp.zeros([], jnp.int32), v_row=rows, v_col=cols, v=full)

    def update(self, updates, state, params=None, **extra_args):
        ours = jax.tree_util.tree_structure(updates, is_leaf=_none)
        theirs = jax.tree_util.tree_structure(state.v, is_leaf=_none)
        if ours != theirs:
            raise ValueError(
                "scale_by_factored_rms: the structure of updates differs from the state: "
                f"{ours} vs {theirs}"
            )
        decay = self.decay_rate_fn(state.count - self.step_offset, self.decay_rate)
        eps = self.epsilon

        def step(g, v_row, v_col, v):
            if g is None:
                return None
            dt = v.dtype
            g = g.astype(tree_lib.compute_dtype(g.dtype))
            g2 = tree_lib.abs_sq(g).astype(dt) + eps
            axes = self._axes(g)
            if axes is None:
                v = _saturate((decay * v + (1 - decay) * g2).astype(dt))
                return g * jax.lax.rsqrt(v), (v_row, v_col, v)
            small, large = axes
            v_row = _saturate((decay * v_row + (1 - decay) * jnp.mean(g2, axis=large)).astype(dt))
            v_col = _saturate((decay * v_col + (1 - decay) * jnp.mean(g2, axis=small)).astype(dt))
            small_in_row = small - 1 if small > large else small
            row_mean = _finite_mean(v_row, small_in_row)
            # XLA may divide by multiplying with 1/mean, which flushes to 0 for a mean near the
            # cap: scale both by 2^-64 there (exact, so the ratio is the same number)
            shrink = jnp.where(row_mean > 2.0**64, 2.0**-64, 1.0).astype(dt)
            ratio = (v_row * shrink) / (row_mean * shrink)
            row_factor = jnp.expand_dims(jax.lax.rsqrt(ratio), large)
            col_factor = jnp.expand_dims(jax.lax.rsqrt(v_col), small)
            return g * row_factor * col_factor, (v_row, v_col, v)

        treedef = jax.tree_util.tree_structure(updates, is_leaf=_none)
        flat = [treedef.flatten_up_to(t) for t in (updates, state.v_row, state.v_col, state.v)]
        results = [step(*args) for args in zip(*flat, strict=True)]
        ups = [
            None if r is None else r[0].astype(g.dtype)
            for r, g in zip(results, flat[0], strict=True)
        ]
        slots = [None if r is None else r[1][i] for r in results for i in range(3)]
        rows, cols, full = (jax.tree_util.tree_unflatten(treedef, slots[i::3]) for i in range(3))
        new_state = FactoredState(
            count=tree_lib.safe_increment(state.count), v_row=rows, v_col=cols, v=full
        )
        return jax.tree_util.tree_unflatten(treedef, ups), new_state


# ----------------------------------------------------------------------------------------------
# SM3.


class ScaleBySM3State(NamedTuple):
    """Per parameter the cover-set accumulators ``accumulators`` (one vector per axis for arrays
    of rank >= 2, else one per element), and the ``momentum`` of the scaled update."""

    accumulators: Any
    momentum: Any


@transform
class scale_by_sm3(GradientTransformation):
    """SM3's scaling: AdaGrad with one accumulator per row, column, ... (Anil et al., 2019,
    Algorithm SM3-II), plus momentum.

    For an array of rank ``k >= 2`` the cover sets are its slices along each axis, with one
    accumulator vector ``μ^{(a)}`` per axis ``a``; vectors and scalars keep one accumulator per
    element (plain AdaGrad). For each element ``i``:

    .. math::
        ν_t(i) = β_2 \\min_a μ^{(a)}_{t-1}(i_a) + c\\, g_t(i)^2,\\quad
        μ^{(a)}_t(j) = \\max_{i:\\,i_a=j} ν_t(i),\\\\
        u_t = g_t / \\sqrt{ν_t + ε}\\ (0\\ \\text{where}\\ ν_t = 0),\\quad
        m_t = β_1 m_{t-1} + (1-β_1) u_t,

    with ``c = 1`` when ``β2 = 1`` (the paper's sums) and ``c = 1 − β2`` otherwise. The output
    is ``m_t``. ``β1 = 0`` and ``ε = 0`` give the paper's box exactly. Complex parameters are
    refused (the cover-set maximum needs an order).

    The accumulators saturate at the largest finite value of their dtype (``|g| ≳ 1.8e19`` in
    float32) instead of overflowing. Arrays with a zero-size axis are allowed (their update is
    an empty array of the same shape).

    Args:
        b1: momentum on the scaled update, in [0, 1).
        b2: decay of the accumulators, in [0, 1] (1: the paper's sums).
        eps: added under the square root.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_sm3(b1=0.0, eps=0.0)
        >>> g = jnp.array([[1.0, 2.0], [3.0, 4.0]])
        >>> state = tx.init(g)
        >>> [a.shape for a in state.accumulators]
        [(2,), (2,)]
        >>> u, _ = tx.update(g, state)
        >>> u.tolist()  # the first step is the sign of the gradient
        [[1.0, 1.0], [1.0, 1.0]]

    Reference: Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization",
    NeurIPS 2019.
    """

    b1: Any = 0.9
    b2: Any = 1.0
    eps: Any = 1e-8

    def _check(self):
        check_decay("scale_by_sm3", "b1", self.b1)
        check_range("scale_by_sm3", "b2", self.b2, low=0.0, high=1.0)
        check_nonnegative("scale_by_sm3", "eps", self.eps)

    def init(self, params):
        def accumulators(p):
            if p is None:
                return None
            if jnp.iscomplexobj(p):
                raise TypeError(
                    f"scale_by_sm3: complex parameters are not supported, got dtype "
                    f"{jnp.result_type(p)}"
                )
            dt, shape = _stat_dtype(p), jnp.shape(p)
            if len(shape) < 2:
                return tree_lib.full_like(p, 0, dt)
            return tuple(jnp.zeros((n,), dt) for n in shape)

        return ScaleBySM3State(
            accumulators=_map(accumulators, params), momentum=tree_lib.tree_zeros_like(params)
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.momentum, "scale_by_sm3", "updates", "state")
        b1, b2 = self.b1, self.b2
        coeff = jnp.where(b2 == 1.0, 1.0, 1.0 - b2)

        def accumulate(g, acc):
            if g is None:
                return None
            g = g.astype(acc[0].dtype if isinstance(acc, tuple) else acc.dtype)
            if g.ndim < 2:
                return _saturate(b2 * acc + coeff * g * g)
            k = g.ndim
            expanded = [
                jnp.reshape(a, [1] * i + [g.shape[i]] + [1] * (k - i - 1))
                for i, a in enumerate(acc)
            ]
            return _saturate(b2 * functools.reduce(jnp.minimum, expanded) + coeff * g * g)

        treedef = jax.tree_util.tree_structure(updates, is_leaf=_none)
        acc_leaves = treedef.flatten_up_to(state.accumulators)
        g_leaves = treedef.flatten_up_to(updates)
        nus = [accumulate(g, a) for g, a in zip(g_leaves, acc_leaves, strict=True)]

        def scaled(g, nu):
            if g is None:
                return None
            u = jnp.where(nu > 0, g.astype(nu.dtype) * jax.lax.rsqrt(nu + self.eps), 0.0)
            return u

        def new_acc(nu, acc):
            if nu is None:
                return None
            if nu.ndim < 2:
                return nu.astype(acc.dtype)
            axes = range(nu.ndim)
            if nu.size == 0:  # an empty cover set: its accumulator keeps its (zero) start
                return tuple(jnp.zeros_like(a) for a in acc)
            return tuple(
                jnp.max(nu, axis=tuple(j for j in axes if j != i)).astype(a.dtype)
                for i, a in enumerate(acc)
            )

        us = [scaled(g, nu) for g, nu in zip(g_leaves, nus, strict=True)]
        accs = [new_acc(nu, a) for nu, a in zip(nus, acc_leaves, strict=True)]
        us = jax.tree_util.tree_unflatten(treedef, us)
        momentum = _map(
            lambda u, m: None if u is None else (b1 * m + (1 - b1) * u).astype(m.dtype),
            us,
            state.momentum,
        )
        out = _map(lambda m, g: None if g is None else m.astype(g.dtype), momentum, updates)
        return out, ScaleBySM3State(
            accumulators=jax.tree_util.tree_unflatten(treedef, accs), momentum=momentum
        )
