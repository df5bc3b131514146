"""Gradient clipping: element-wise, by global norm, by per-block RMS, unit-wise relative to the
weights (AGC), and per example (DP-SGD).

Every norm here is correct at any finite scale: where a sum of squares overflows (``‖g‖ ≳
1.8e19`` in float32) or underflows it is recomputed as ``m ‖g/m‖`` with ``m = max |g|`` (one
``lax.cond`` per call; the common case is the plain ``sqrt(Σ |g|²)``, bit for bit). So
``clip_by_global_norm(1.0)`` of a gradient whose entries are about ``1e25`` returns it scaled
to norm 1, not zeros.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    EmptyState,
    GradientTransformation,
    check_range,
    concrete_float,
    static_field,
    transform,
)
from gradtx.numerics import is_none as _none
from gradtx.safe_math import (
    _cond,
    _global_norm,
    _is_normal,
    _pick,
    _roots,
    _scales,
    _sqrt_normal,
    _times,
)

__all__ = [
    "clip",
    "clip_by_global_norm",
    "clip_by_block_rms",
    "adaptive_grad_clip",
    "unitwise_norm",
    "unitwise_clip",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "ClipState",
    "ClipByGlobalNormState",
    "AdaptiveGradClipState",
]


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

    ``‖u‖`` is correct at any finite scale (a sum of squares that overflows is recomputed
    scaled by ``max |u|``), so updates of ``1e25`` are clipped to norm ``c``, not zeroed.

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
        norm = _global_norm(updates)
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
        leaves, treedef = jax.tree_util.tree_flatten(updates, is_leaf=_none)
        idx = [i for i, u in enumerate(leaves) if u is not None]
        xs = [leaves[i].astype(tree_lib.compute_dtype(leaves[i].dtype)) for i in idx]
        rms = _roots(xs, [jnp.mean(tree_lib.abs_sq(x)) for x in xs], mean=True)
        out = list(leaves)
        for i, x, r in zip(idx, xs, rms, strict=True):
            out[i] = (x / jnp.maximum(1.0, r / self.threshold)).astype(leaves[i].dtype)
        return treedef.unflatten(out), state


# ----------------------------------------------------------------------------------------------
# optax's names for the (empty) states of the clipping transforms.

ClipState = EmptyState
ClipByGlobalNormState = EmptyState
AdaptiveGradClipState = EmptyState


# ----------------------------------------------------------------------------------------------
# Unit-wise clipping (NFNets).


def _norm_dtype(dtype: Any) -> Any:
    """The real dtype a norm of ``dtype`` values is accumulated in: at least float32."""
    return tree_lib.real_dtype(jnp.promote_types(tree_lib.compute_dtype(dtype), jnp.float32))


def _default_unit_axes(x: jax.Array) -> tuple[int, ...] | None:
    """The axes one unit spans for a parameter of this shape (``None``: the whole array)."""
    if sum(d != 1 for d in x.shape) <= 1:  # a scalar or a vector, possibly with unit axes
        return None
    if x.ndim in (2, 3):  # a dense kernel (in, out) or a multi-head one (in, heads, out)
        return (0,)
    if x.ndim == 4:  # a 2-D convolution kernel (h, w, in, out)
        return (0, 1, 2)
    if x.ndim == 5:  # a 3-D convolution kernel (d, h, w, in, out)
        return (0, 1, 2, 3)
    raise ValueError(
        f"unitwise_norm: x must have 0 to 5 dimensions when axis is None, got shape "
        f"{tuple(x.shape)}; pass axis to say which axes one unit spans"
    )


def unitwise_norm(x: Any, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """The 2-norm of each *unit* of ``x``, broadcast back to ``x``'s shape.

    A unit is the slice of ``x`` feeding one output: ``‖x_i‖ = sqrt(Σ_{j ∈ unit i} |x_j|²)``,
    summed over ``axis``. With ``axis=None`` the axes follow the layouts NFNets uses: a scalar or
    vector (also with size-1 axes) is one unit; a dense kernel ``(in, out)`` or multi-head kernel
    ``(in, heads, out)`` sums over axis 0; a convolution kernel ``(h, w, in, out)`` over
    ``(0, 1, 2)``; a 3-D one ``(d, h, w, in, out)`` over ``(0, 1, 2, 3)``. Other ranks need
    ``axis``. Norms are accumulated in at least float32 and returned in ``x``'s real dtype.

    Args:
        x: an array (real or complex).
        axis: the axis or axes one unit spans; ``None`` infers them from the rank as above.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> w = jnp.array([[3.0, 0.0], [4.0, 1.0]])  # (in=2, out=2): units are columns
        >>> gradtx.unitwise_norm(w).tolist()
        [[5.0, 1.0], [5.0, 1.0]]

    Reference: Brock, De, Smith & Simonyan, "High-Performance Large-Scale Image Recognition
    Without Normalization", ICML 2021, §4.1.
    """
    x = jnp.asarray(x)
    return _unit_norms([x], axis)[0].astype(tree_lib.real_dtype(_float_like(x.dtype)))


def _unit_norms(xs: list[jax.Array], axis: int | tuple[int, ...] | None) -> list[jax.Array]:
    """:func:`unitwise_norm` of each array, kept in the dtype it was accumulated in (at least
    float32); correct at any finite scale, with one ``lax.cond`` for all of them."""
    axes = [_default_unit_axes(x) if axis is None else axis for x in xs]
    wide = [x.astype(jnp.promote_types(x.dtype, _norm_dtype(x.dtype))) for x in xs]
    sqs = [
        jnp.sum(tree_lib.abs_sq(w), axis=a, keepdims=True).astype(_norm_dtype(x.dtype))
        for x, w, a in zip(xs, wide, axes, strict=True)
    ]
    norms = _roots(wide, sqs, axes, keepdims=True)
    return [jnp.broadcast_to(n, x.shape) for n, x in zip(norms, xs, strict=True)]


def _float_like(dtype: Any) -> Any:
    """``dtype`` when it is inexact, else the default float dtype (for integer inputs)."""
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.result_type(float)


def unitwise_clip(g_norm: Any, max_norm: Any, grad: Any, div_eps: Any = 1e-6) -> jax.Array:
    """Rescale each unit of ``grad`` whose norm reaches ``max_norm`` down to ``max_norm``:
    ``g ← g`` where ``‖g‖ < m``, else ``g · m / max(‖g‖, δ)``.

    Args:
        g_norm: the unit-wise norms of ``grad`` (as :func:`unitwise_norm` returns them).
        max_norm: the largest norm allowed per unit, shaped like ``g_norm``.
        grad: the gradient, shaped like ``g_norm``.
        div_eps: ``δ``, a floor on the divisor (guards the division; a unit with norm below
            ``δ`` is never clipped while ``max_norm > δ``).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> g = jnp.array([3.0, 4.0])
        >>> out = gradtx.unitwise_clip(jnp.full(2, 5.0), jnp.full(2, 1.0), g)
        >>> [round(float(x), 4) for x in out]
        [0.6, 0.8]

    Reference: Brock et al., "High-Performance Large-Scale Image Recognition Without
    Normalization", ICML 2021, eq. (3).
    """
    shapes = [jnp.shape(g_norm), jnp.shape(max_norm), jnp.shape(grad)]
    if shapes[0] != shapes[1] or shapes[0] != shapes[2]:
        raise ValueError(
            "unitwise_clip: g_norm, max_norm and grad must have the same shape, got "
            f"{shapes[0]}, {shapes[1]} and {shapes[2]}"
        )
    check_range("unitwise_clip", "div_eps", div_eps, low=0.0, low_open=True)
    grad = jnp.asarray(grad)
    clipped = grad * (max_norm / jnp.maximum(g_norm, div_eps))
    return jnp.where(g_norm < max_norm, grad, clipped).astype(grad.dtype)


@transform
class adaptive_grad_clip(GradientTransformation):
    """Adaptive gradient clipping (AGC): clip each unit's gradient relative to its weights.

    For every unit ``i`` (see :func:`unitwise_norm`) with weights ``W_i`` and gradient ``G_i``:

    .. math::
        G_i \\leftarrow \\begin{cases}
            λ \\dfrac{\\max(\\lVert W_i\\rVert, ε)}{\\lVert G_i\\rVert} G_i
                & \\text{if } \\lVert G_i\\rVert \\ge λ \\max(\\lVert W_i\\rVert, ε) \\\\
            G_i & \\text{otherwise.}
        \\end{cases}

    Args:
        clipping: ``λ >= 0``, the largest allowed ratio of gradient norm to weight norm.
        eps: ``ε >= 0``, a floor on the weight norm so zero-initialised units still move.
        axis: the axis or axes a unit spans (``None``: inferred from each leaf's rank).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.adaptive_grad_clip(0.1)
        >>> p, g = jnp.array([3.0, 4.0]), jnp.array([0.0, 2.0])
        >>> u, _ = tx.update(g, tx.init(p), p)
        >>> [round(float(x), 4) for x in u]  # ‖g‖ = 2 > 0.1 · 5, so rescaled to norm 0.5
        [0.0, 0.5]

    Reference: Brock, De, Smith & Simonyan, "High-Performance Large-Scale Image Recognition
    Without Normalization", ICML 2021, §4.1.
    """

    clipping: Any
    eps: Any = 1e-3
    axis: Any = static_field(None)

    def _check(self):
        check_range("adaptive_grad_clip", "clipping", self.clipping, low=0.0)
        check_range("adaptive_grad_clip", "eps", self.eps, low=0.0)
        axis = self.axis
        if isinstance(axis, list):
            axis = tuple(axis)
            object.__setattr__(self, "axis", axis)
        ok = (
            axis is None
            or isinstance(axis, int)
            or (isinstance(axis, tuple) and all(isinstance(a, int) for a in axis))
        )
        if not ok or isinstance(axis, bool):
            raise TypeError(
                f"adaptive_grad_clip: axis must be None, an int or a tuple of ints, got {axis!r}"
            )

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                "adaptive_grad_clip: update needs params (call update(updates, state, params))"
            )
        tree_lib.check_structure(updates, params, "adaptive_grad_clip", "updates", "params")

        gs, treedef = jax.tree_util.tree_flatten(updates, is_leaf=_none)
        ps = treedef.flatten_up_to(params)
        idx = [i for i, g in enumerate(gs) if g is not None]
        xs = [jnp.asarray(gs[i]) for i in idx] + [jnp.asarray(ps[i]) for i in idx]
        norms = _unit_norms(xs, self.axis)  # gradients' then weights' (one lax.cond)

        def f(g, g_norm, p_norm):
            max_norm = self.clipping * jnp.maximum(p_norm.astype(g_norm.dtype), self.eps)
            cd = jnp.promote_types(tree_lib.compute_dtype(g.dtype), g_norm.dtype)
            return unitwise_clip(g_norm, max_norm, g.astype(cd)).astype(g.dtype)

        out = list(gs)
        k = len(idx)
        for j, i in enumerate(idx):
            out[i] = f(xs[j], norms[j], norms[k + j])
        return treedef.unflatten(out), state


# ----------------------------------------------------------------------------------------------
# Per-example clipping for differentially private SGD.


def _check_clip_norm(owner: str, name: str, value: Any) -> None:
    """A clip norm: ``>= 0`` when concrete; ``inf`` is allowed (no clipping)."""
    if isinstance(value, str | bytes):
        raise TypeError(f"{owner}: {name} must be a number or array, got {value!r}")
    x = concrete_float(value)
    if x is not None and not x >= 0:
        raise ValueError(f"{owner}: {name} must be >= 0, got {value!r}")


def _check_batch_axis(grads: Any, owner: str) -> list[jax.Array]:
    leaves = [jnp.asarray(g) for g in jax.tree_util.tree_leaves(grads)]
    if not leaves:
        raise ValueError(f"{owner}: grads has no arrays; expected per-example gradients")
    shapes = [tuple(g.shape) for g in leaves]
    if any(len(s) == 0 or s[0] != shapes[0][0] for s in shapes) or not shapes[0]:
        raise ValueError(
            f"{owner}: every array in grads must have the same batch size on axis 0 "
            f"(one gradient per example), got shapes {shapes}"
        )
    return leaves


def _per_example_sqnorms(leaves: list[jax.Array]) -> jax.Array:
    """``Σ_leaves ‖g_b‖²`` for each example ``b`` (a vector over the batch)."""
    parts = []
    for g in leaves:
        nd = _norm_dtype(g.dtype)
        sq = tree_lib.abs_sq(g.astype(jnp.promote_types(g.dtype, nd)))
        parts.append(jnp.sum(sq.reshape(g.shape[0], -1), axis=1).astype(nd))
    dtype = jnp.result_type(*parts)
    return sum(p.astype(dtype) for p in parts)


def _per_example_norms(leaves: list[jax.Array]) -> jax.Array:
    """``‖g_b‖`` for each example ``b``, correct at any finite scale: when some example's sum of
    squares over- or underflows, ``m_b ‖g_b / m_b‖`` with ``m_b = max |g_b|`` (one
    ``lax.cond``; the common case is ``sqrt`` of :func:`_per_example_sqnorms`, bit for bit)."""
    sq = _per_example_sqnorms(leaves)

    def rescaled(sq):
        flat = [g.reshape(g.shape[0], -1) for g in leaves if g.size]
        flat = [g.astype(jnp.promote_types(g.dtype, sq.dtype)) for g in flat]
        if not flat:
            return jnp.sqrt(sq)
        m = functools.reduce(
            jnp.maximum, [jnp.max(jnp.abs(g), axis=1).astype(sq.dtype) for g in flat]
        )
        usable = (m > 0) & jnp.isfinite(m)
        (d1, d2), up = _scales(m, usable)
        down = (d1[:, None], d2[:, None])
        s = sum(jnp.sum(tree_lib.abs_sq(_times(g, down)), axis=1).astype(sq.dtype) for g in flat)
        root = _times(jnp.sqrt(jnp.where(usable, s, jnp.ones_like(s))), up)
        return jnp.where(_is_normal(sq), _sqrt_normal(sq), _pick(usable, root, m, sq))

    return _cond(jnp.all(_is_normal(sq)), jnp.sqrt, rescaled, sq)


def _clipped_sum(g: jax.Array, multipliers: jax.Array) -> jax.Array:
    dtype = jnp.promote_types(g.dtype, multipliers.dtype)
    return jnp.tensordot(multipliers.astype(dtype), g.astype(dtype), axes=1)


def _clip_examples(leaves: list[jax.Array], clip_norm: Any) -> tuple[list[jax.Array], jax.Array]:
    norms = _per_example_norms(leaves)
    # min(1, C / ‖g_b‖); 0/0 and ∞/∞ (nothing to clip, or no clipping) give 1.
    ratio = jnp.asarray(clip_norm, norms.dtype) / norms
    multipliers = jnp.where(jnp.isnan(ratio), 1.0, jnp.minimum(ratio, 1.0)).astype(norms.dtype)
    num_clipped = jnp.sum(multipliers < 1.0)
    return [_clipped_sum(g, multipliers) for g in leaves], num_clipped


def per_example_global_norm_clip(grads: Any, l2_norm_clip: Any) -> tuple[Any, jax.Array]:
    """Clip each example's gradient to global norm ``C`` and sum them over the batch.

    .. math::
        \\bar g = \\sum_b g_b \\min\\!\\left(1, \\frac{C}{\\lVert g_b\\rVert}\\right),\\qquad
        \\lVert g_b\\rVert = \\sqrt{\\textstyle\\sum_{\\text{leaves}} \\lVert g_b^{(l)}\\rVert^2}

    (the clipping step of DP-SGD, without the noise). An example with zero gradient is kept
    as it is (factor 1), also when ``C = 0``.

    Args:
        grads: a pytree of per-example gradients, every leaf with the batch on axis 0.
        l2_norm_clip: ``C >= 0`` (``inf``: no clipping).

    Returns:
        ``(clipped_sum, num_clipped)``: the pytree of summed clipped gradients (batch axis
        removed) and how many examples had a factor below 1.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> g = [jnp.array([[0.0, 0.0], [3.0, 4.0], [0.6, 0.8]])]
        >>> total, n = gradtx.per_example_global_norm_clip(g, 1.0)
        >>> [round(float(x), 4) for x in total[0]], int(n)
        ([1.2, 1.6], 1)

    Reference: Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, Algorithm 1.
    """
    owner = "per_example_global_norm_clip"
    _check_clip_norm(owner, "l2_norm_clip", l2_norm_clip)
    leaves = _check_batch_axis(grads, owner)
    clipped, num_clipped = _clip_examples(leaves, l2_norm_clip)
    return jax.tree_util.tree_structure(grads).unflatten(clipped), num_clipped


def per_example_layer_norm_clip(
    grads: Any, global_l2_norm_clip: Any, uniform: bool = True
) -> tuple[Any, Any]:
    """Clip each example's gradient layer by layer and sum over the batch.

    Each of the ``K`` leaves (layers) ``l`` is clipped on its own, as in
    :func:`per_example_global_norm_clip`, to

    .. math::
        C_l = \\frac{C}{\\sqrt K}\\ \\text{(uniform)}\\qquad\\text{or}\\qquad
        C_l = C\\sqrt{\\frac{D_l}{D}}\\ \\text{(by size)},

    where ``D_l`` is the number of entries of one example's gradient of layer ``l`` and ``D``
    their total. Either way ``Σ_l C_l² = C²``, so the whole clipped gradient has norm at most
    ``C``. With one leaf this is :func:`per_example_global_norm_clip`.

    Args:
        grads: a pytree of per-example gradients, every leaf with the batch on axis 0.
        global_l2_norm_clip: the overall clip norm ``C >= 0``.
        uniform: split ``C`` evenly over the layers (``True``) or by layer size (``False``).

    Returns:
        ``(clipped_sums, num_clipped)``: two pytrees shaped like ``grads`` (batch axis removed):
        each layer's summed clipped gradients, and each layer's number of clipped examples.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> g = {"a": jnp.array([[3.0], [0.5]]), "b": jnp.array([[4.0], [0.5]])}
        >>> total, n = gradtx.per_example_layer_norm_clip(g, 2.0 ** 0.5)  # C_l = 1
        >>> float(total["a"][0]), float(total["b"][0]), int(n["a"]), int(n["b"])
        (1.5, 1.5, 1, 1)

    Reference: McMahan, Ramage, Talwar & Zhang, "Learning Differentially Private Recurrent
    Language Models", ICLR 2018 (per-layer clipping); Abadi et al., "Deep Learning with
    Differential Privacy", CCS 2016.
    """
    owner = "per_example_layer_norm_clip"
    _check_clip_norm(owner, "global_l2_norm_clip", global_l2_norm_clip)
    leaves = _check_batch_axis(grads, owner)
    sizes = [math.prod(g.shape[1:]) for g in leaves]
    total = sum(sizes)
    if uniform:
        fractions = [1.0 / len(leaves)] * len(leaves)
    else:
        fractions = [s / total if total else 0.0 for s in sizes]
    sums, counts = [], []
    for g, frac in zip(leaves, fractions, strict=True):
        clipped, n = _clip_examples([g], global_l2_norm_clip * frac**0.5)
        sums.append(clipped[0])
        counts.append(n)
    treedef = jax.tree_util.tree_structure(grads)
    return treedef.unflatten(sums), treedef.unflatten(counts)
