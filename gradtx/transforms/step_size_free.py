"""Step sizes computed from the problem, not tuned: Polyak's step and Distance over Gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    EmptyState,
    GradientTransformation,
    check_dtype,
    check_nonnegative,
    check_range,
    static_field,
    transform,
)
from gradtx.numerics import is_none as _none
from gradtx.numerics import tree_map_none as _map
from gradtx.safe_math import _global_norm, _global_norms, _roots, _saturate

__all__ = [
    "scale_by_polyak",
    "scale_by_distance_over_gradients",
    "ScaleByDistanceOverGradientsState",
    "scale_by_dog",
    "DoGState",
]

# Below this squared gradient norm the Polyak step is not computed (the update is zero).
_TINY_SQ_NORM = float(jnp.finfo(jnp.float64).eps)


@transform
class scale_by_polyak(GradientTransformation):
    """Scale the updates by the (stochastic) Polyak step size, capped at ``γ_max``.

    .. math::
        u \\leftarrow \\min\\left(\\frac{f(θ) - f^\\star}{\\lVert u\\rVert^2 + ε},\\
        γ_{max}\\right) u

    where ``f(θ)`` is passed to ``update`` as ``value=`` and ``‖u‖`` is the global norm. With
    ``variant="sps+"`` the gap is clipped at zero, ``(f − f*)_+`` (Garrigos et al., 2023). When
    ``‖u‖² + ε`` is below float64 machine epsilon the update is zero.

    Args:
        f_min: ``f*``, a lower bound on the objective (0 for models that interpolate the data).
        max_learning_rate: the cap ``γ_max``.
        eps: added to the squared norm (the ``δ`` of ALI-G, Berrada et al., 2020).
        variant: ``"sps"`` or ``"sps+"``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_polyak()
        >>> g = jnp.array([2.0, 0.0])  # f(θ) = θ·θ at θ = (1, 0): f = 1, ‖g‖² = 4
        >>> u, _ = tx.update(g, tx.init(None), value=jnp.array(1.0))
        >>> [round(float(x), 4) for x in u]
        [0.5, 0.0]

    Reference: Loizou et al., "Stochastic Polyak Step-size for SGD: An Adaptive Learning Rate
    for Fast Convergence", AISTATS 2021 (SPS_max, eq. 5, with c = 1).
    """

    f_min: Any = 0.0
    max_learning_rate: Any = 1.0
    eps: Any = 0.0
    variant: str = static_field("sps")

    def _check(self):
        check_range("scale_by_polyak", "f_min", self.f_min)
        check_range("scale_by_polyak", "max_learning_rate", self.max_learning_rate, low=0.0)
        check_nonnegative("scale_by_polyak", "eps", self.eps)
        if self.variant not in ("sps", "sps+"):
            raise ValueError(
                f"scale_by_polyak: variant must be 'sps' or 'sps+', got {self.variant!r}"
            )

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, *, value=None, **extra_args):
        if value is None:
            raise ValueError(
                "scale_by_polyak: update needs the objective's value "
                "(call update(grads, state, params, value=loss))"
            )
        sq_norm = tree_lib.tree_l2_norm(updates, squared=True)
        gap = jnp.asarray(value - self.f_min).astype(sq_norm.dtype)
        if self.variant == "sps+":
            gap = jnp.maximum(gap, 0.0)
        den = sq_norm + self.eps
        small = den <= _TINY_SQ_NORM
        step = jnp.minimum(gap / jnp.where(small, 1.0, den), self.max_learning_rate)
        step = jnp.where(small, 0.0, step)

        def f(u):
            if u is None:
                return None
            return (u.astype(tree_lib.compute_dtype(u.dtype)) * step).astype(u.dtype)

        return _map(f, updates), state


class ScaleByDistanceOverGradientsState(NamedTuple):
    """Per block: the largest distance from the start so far (``max_dist``), the running sum
    of squared gradient norms, and the initial parameters."""

    max_dist: Any
    grad_sum_of_squares: Any
    init_params: Any


def _sq_norm(x: jax.Array) -> jax.Array:
    cd = tree_lib.compute_dtype(jnp.result_type(x))
    return jnp.sum(tree_lib.abs_sq(jnp.asarray(x).astype(cd)))


def _cdt(x: Any) -> Any:
    return tree_lib.compute_dtype(jnp.result_type(x))


def _norms(tree: Any) -> Any:
    """Each leaf's 2-norm, accumulated in its compute dtype and correct at any finite scale
    (one ``lax.cond`` for all leaves; see :func:`gradtx.safe_math._roots`)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=_none)
    idx = [i for i, x in enumerate(leaves) if x is not None]
    xs = [jnp.asarray(leaves[i]).astype(_cdt(leaves[i])) for i in idx]
    roots = _roots(xs, [jnp.sum(tree_lib.abs_sq(x)) for x in xs])
    out = list(leaves)
    for i, r in zip(idx, roots, strict=True):
        out[i] = r
    return treedef.unflatten(out)


@transform
class scale_by_distance_over_gradients(GradientTransformation):
    """Layer-wise Distance over Gradients (LDoG): a learning-rate-free step size per block.

    Per block ``l`` (Ivgi et al., 2023, Algorithm 1 applied to each block, the paper's LDoG):

    .. math::
        \\bar r_t = \\max(\\bar r_{t-1}, \\lVert θ_t - θ_0\\rVert),\\quad
        \\bar r_{-1} = r_ε = ρ\\,(1 + \\lVert θ_0\\rVert),\\quad
        G_t = G_{t-1} + \\lVert g_t\\rVert^2,\\quad
        u_t = s\\,\\frac{\\bar r_t}{\\sqrt{G_t + ε}}\\, g_t.

    The output has the sign of ``s`` (``global_scale``): use ``-1.0``, or chain
    :class:`gradtx.scale_by_learning_rate`, for descent. ``init`` must receive the real
    initial parameters (they are stored, and set ``r_ε``).

    ``G`` saturates at the largest finite value of its dtype and the denominator is never below
    the current ``‖g‖`` (an identity, since ``G_t ≥ ‖g_t‖²``), so a step is at most ``|s| r̄`` long
    even when ``G`` sits at the cap; the norms are correct at any finite scale.

    Args:
        reps_rel: ``ρ``, the relative initial distance (the authors suggest 1e-6, or 1e-4 for
            models with batch normalisation).
        eps: added under the square root (the paper has none; keeps zero gradients at zero).
        param_dtype: dtype the initial parameters are stored in; never below the params' own
            precision (float16 params are stored in float32, float64 and complex stay).
        global_scale: the factor ``s``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_distance_over_gradients(reps_rel=0.1, eps=0.0)
        >>> p = jnp.array([3.0, 4.0])  # r_ε = 0.1 · (1 + 5) = 0.6
        >>> u, _ = tx.update(jnp.array([0.0, 2.0]), tx.init(p), p)
        >>> [round(float(x), 4) for x in u]  # 0.6 / 2 · g
        [0.0, 0.6]

    Reference: Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
    Size Schedule", ICML 2023.
    """

    reps_rel: Any = 1e-6
    eps: Any = 1e-8
    param_dtype: Any = static_field(jnp.float32)
    global_scale: Any = 1.0

    def _check(self):
        o = "scale_by_distance_over_gradients"
        check_nonnegative(o, "reps_rel", self.reps_rel)
        check_nonnegative(o, "eps", self.eps)
        check_range(o, "global_scale", self.global_scale)
        object.__setattr__(self, "param_dtype", check_dtype(o, "param_dtype", self.param_dtype))

    def _store_dtype(self, p: Any) -> Any:
        dt = jnp.result_type(p)
        if self.param_dtype is None:
            return dt
        return jnp.promote_types(self.param_dtype, dt)

    def init(self, params):
        norms = _norms(params)

        def r0(n):
            return None if n is None else self.reps_rel * (1 + n)

        def zero(n):
            return None if n is None else jnp.zeros((), tree_lib.real_dtype(n.dtype))

        def store(p):
            return None if p is None else jnp.asarray(p).astype(self._store_dtype(p))

        return ScaleByDistanceOverGradientsState(
            max_dist=_map(r0, norms),
            grad_sum_of_squares=_map(zero, norms),
            init_params=_map(store, params),
        )

    def update(self, updates, state, params=None, **extra_args):
        o = "scale_by_distance_over_gradients"
        if params is None:
            raise ValueError(f"{o}: update needs params (call update(updates, state, params))")
        tree_lib.check_structure(updates, state.init_params, o, "updates", "initial params")

        deltas = _map(
            lambda p, p0: None if p0 is None else jnp.asarray(p).astype(p0.dtype) - p0,
            params,
            state.init_params,
        )
        dist_norms, g_norms = _norms((deltas, updates))  # one lax.cond for both
        max_dist = _map(
            lambda d, n: None if d is None else jnp.maximum(d, n.astype(d.dtype)),
            state.max_dist,
            dist_norms,
        )
        g_sos = _map(
            lambda s, g: None if s is None else _saturate(s + _sq_norm(g).astype(s.dtype)),
            state.grad_sum_of_squares,
            updates,
        )

        def step(g, d, s, g_norm):
            if g is None:
                return None
            # G ≥ ‖g‖², so the floor changes nothing unless G sits at its cap: a step is then
            # never longer than r̄ (as it never is in exact arithmetic)
            den = jnp.maximum(jnp.sqrt(s + self.eps), g_norm.astype(s.dtype))
            eta = jnp.where(den == 0, 0.0, self.global_scale * d / jnp.where(den == 0, 1.0, den))
            cd = tree_lib.compute_dtype(g.dtype)
            return (g.astype(cd) * eta.astype(tree_lib.real_dtype(cd))).astype(g.dtype)

        out = _map(step, updates, max_dist, g_sos, g_norms)
        return out, ScaleByDistanceOverGradientsState(max_dist, g_sos, state.init_params)


class DoGState(NamedTuple):
    """Whether no step has been taken yet, the initial parameters, the largest distance from
    them so far (``r̄``) and the running sum of squared gradient norms (``G``)."""

    is_init_step: jax.Array
    init_params: Any
    max_dist: jax.Array
    sum_sq_norm_grads: jax.Array


_INIT_STEPS = ("heuristic", "distance", "learning_rate")


@transform
class scale_by_dog(GradientTransformation):
    """Distance over Gradients (DoG): one learning-rate-free step size for all parameters.

    Ivgi et al. (2023), Algorithm 1, with global norms over every parameter:

    .. math::
        \\bar r_t = \\max(\\bar r_{t-1}, \\lVert θ_t - θ_0\\rVert),\\quad
        G_t = G_{t-1} + \\lVert g_t\\rVert^2,\\quad
        u_t = \\frac{\\bar r_t}{\\sqrt{G_t + ε}}\\, g_t.

    ``init_step`` sets the start: ``("heuristic", ρ)`` gives ``r̄_{−1} = ρ (1 + ‖θ_0‖)`` (the
    paper's suggestion, ρ = 1e-6, or 1e-4 with batch normalisation); ``("distance", r)`` gives
    ``r̄_{−1} = r``; ``("learning_rate", η)`` takes a first step of ``η g_0`` and starts from
    ``r̄_{−1} = 0``. The output is ``+η_t g_t``: chain ``scale_by_learning_rate`` for descent.
    ``init`` must receive the real initial parameters.

    ``G`` saturates at the largest finite value of its dtype and the denominator is never below
    the current ``‖g‖`` (an identity, since ``G_t ≥ ‖g_t‖²``), so a step is at most ``r̄`` long even
    when ``G`` sits at the cap; the norms are correct at any finite scale.

    Args:
        init_step: ``(kind, value)``, kind one of ``"heuristic"``, ``"distance"``,
            ``"learning_rate"`` (a static setting: a new value recompiles).
        eps: added under the square root (the paper has none).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_dog(("distance", 0.5), eps=0.0)
        >>> p = jnp.array([3.0, 4.0])
        >>> u, _ = tx.update(jnp.array([0.0, 2.0]), tx.init(p), p)
        >>> [round(float(x), 4) for x in u]  # 0.5 / 2 · g
        [0.0, 0.5]

    Reference: Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
    Size Schedule", ICML 2023.
    """

    init_step: Any = static_field(("heuristic", 1e-6))
    eps: Any = 1e-8

    def _check(self):
        o = "scale_by_dog"
        try:
            kind, value = self.init_step
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{o}: init_step must be a pair (kind, value), got {self.init_step!r}"
            ) from e
        if kind not in _INIT_STEPS:
            raise ValueError(f"{o}: init_step kind must be one of {_INIT_STEPS}, got {kind!r}")
        check_nonnegative(o, "init_step value", value)
        object.__setattr__(self, "init_step", (kind, float(value)))
        check_nonnegative(o, "eps", self.eps)

    def init(self, params):
        kind, value = self.init_step
        norm = _global_norm(params)
        r0 = {"heuristic": value * (1 + norm), "distance": value, "learning_rate": 0.0}[kind]
        return DoGState(
            is_init_step=jnp.array(True),
            init_params=params,
            max_dist=jnp.asarray(r0, norm.dtype),
            sum_sq_norm_grads=jnp.zeros((), norm.dtype),
        )

    def update(self, updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                "scale_by_dog: update needs params (call update(updates, state, params))"
            )
        tree_lib.check_structure(updates, state.init_params, "scale_by_dog", "updates", "params")
        delta = _map(
            lambda p, p0: None if p is None else p.astype(_cdt(p)) - p0.astype(_cdt(p)),
            params,
            state.init_params,
        )
        dist, g_norm = _global_norms(delta, updates)
        max_dist = jnp.maximum(state.max_dist, dist.astype(state.max_dist.dtype))
        g_sq = tree_lib.tree_l2_norm(updates, squared=True).astype(state.max_dist.dtype)
        sum_sq = _saturate(state.sum_sq_norm_grads + g_sq)
        # G ≥ ‖g‖²: the floor binds only when G sits at its cap (steps stay at most r̄ long)
        den = jnp.maximum(jnp.sqrt(sum_sq + self.eps), g_norm.astype(sum_sq.dtype))
        eta = jnp.where(den == 0, 0.0, max_dist / jnp.where(den == 0, 1.0, den))
        kind, value = self.init_step
        if kind == "learning_rate":
            eta = jnp.where(state.is_init_step, value, eta)

        def f(g):
            if g is None:
                return None
            cd = tree_lib.compute_dtype(g.dtype)
            return (g.astype(cd) * eta.astype(tree_lib.real_dtype(cd))).astype(g.dtype)

        out = jax.tree_util.tree_map(f, updates, is_leaf=_none)
        return out, DoGState(
            is_init_step=jnp.array(False),
            init_params=state.init_params,
            max_dist=max_dist,
            sum_sq_norm_grads=sum_sq,
        )
