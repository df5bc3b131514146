"""Layer-wise (per parameter block) scaling: trust ratios (LARS, LAMB, Fromage), block norms.

A *block* is one leaf of the parameter pytree (a weight matrix, a bias vector). These transforms
rescale each block's update by a ratio of norms, so every layer moves by a controlled fraction
of its own size whatever the scale of its gradient. Norms are accumulated in at least float32
(:func:`gradtx.numerics.compute_dtype`) and the result is cast back to the update's dtype.

Norms are correct at any finite scale: where a block's sum of squares overflows (``‖x‖ ≳
1.8e19`` in float32) or underflows (``≲ 1e-19``) it is recomputed as ``m ‖x/m‖`` with
``m = max |x|``; one ``lax.cond`` per step decides for all blocks, and the common case gives
the plain ``sqrt(Σ |x|²)`` bit for bit.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics as tree_lib
from gradtx.core import (
    CountState,
    EmptyState,
    GradientTransformation,
    broadcast_mask,
    check_nonnegative,
    check_range,
    freeze_mask,
    hyper,
    resolve_mask,
    static_field,
    transform,
)
from gradtx.numerics import is_none as _none
from gradtx.numerics import tree_map_none as _map
from gradtx.safe_math import _global_norm, _roots

__all__ = [
    "scale_by_trust_ratio",
    "scale_by_lars",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "normalize_by_update_norm",
    "ScaleByTrustRatioState",
]

ScaleByTrustRatioState = EmptyState  # optax's name for the state of ``scale_by_trust_ratio``


def _block_norms(xs: list[Any], dtypes: list[Any]) -> list[jax.Array]:
    """The 2-norm (Frobenius for matrices) of each block, accumulated in its ``dtype``, correct
    at any finite scale (one ``lax.cond`` for all; see :func:`gradtx.safe_math._roots`)."""
    xs = [jnp.asarray(x).astype(dt) for x, dt in zip(xs, dtypes, strict=True)]
    return _roots(xs, [jnp.sum(tree_lib.abs_sq(x)) for x in xs])


def _flat(tree: Any, *others: Any) -> tuple[Any, list[list[Any]], list[int]]:
    """``tree`` and trees of its structure as flat lists (``None`` placeholders kept), and the
    positions of ``tree``'s non-``None`` leaves."""
    treedef = jax.tree_util.tree_structure(tree, is_leaf=_none)
    flats = [treedef.flatten_up_to(t) for t in (tree, *others)]
    return treedef, flats, [i for i, x in enumerate(flats[0]) if x is not None]


def _unflatten(treedef: Any, n: int, values: dict[int, Any]) -> Any:
    return treedef.unflatten([values.get(i) for i in range(n)])


def _cd(x: jax.Array) -> Any:
    return tree_lib.compute_dtype(jnp.result_type(x))


def _need_params(params: Any, owner: str) -> None:
    if params is None:
        raise ValueError(f"{owner}: update needs params (call update(updates, state, params))")


@transform
class scale_by_trust_ratio(GradientTransformation):
    """Scale each block's update by its trust ratio ``c ‖θ‖ / (‖u‖ + ε)``.

    .. math::
        u^{(l)} \\leftarrow c\\,\\frac{\\max(\\lVert θ^{(l)}\\rVert, n_{min})}
        {\\max(\\lVert u^{(l)}\\rVert, n_{min}) + ε}\\; u^{(l)}

    per leaf ``l`` (Frobenius norms). Where ``‖θ‖`` or ``‖u‖`` is zero the ratio is 1, as in the
    LAMB and LARS reference implementations (the papers' boxes would freeze a block initialised
    at zero forever). This is the ``φ(‖x‖)/‖r + λx‖`` factor of LAMB (You et al., 2020,
    Algorithm 2, with φ the identity) and the ``‖W‖/‖g‖`` factor of Fromage (Bernstein et al.,
    2020, Algorithm 1).

    Both norms are correct at any finite scale (see the module's notes), so a block whose
    ``Σ |u|²`` overflows still gets its ratio.

    Args:
        min_norm: lower bound ``n_min`` on both norms (0: no clipping).
        trust_coefficient: the multiplier ``c``.
        eps: added to the update norm in the denominator.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_trust_ratio()
        >>> p, g = jnp.array([3.0, 4.0]), jnp.array([0.0, 0.5])
        >>> u, _ = tx.update(g, tx.init(p), p)
        >>> [round(float(x), 4) for x in u]  # ‖θ‖ = 5, ‖g‖ = 0.5: the update gets norm 5
        [0.0, 5.0]

    Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020.
    """

    min_norm: Any = 0.0
    trust_coefficient: Any = 1.0
    eps: Any = 0.0

    def _check(self):
        check_nonnegative("scale_by_trust_ratio", "min_norm", self.min_norm)
        check_nonnegative("scale_by_trust_ratio", "trust_coefficient", self.trust_coefficient)
        check_nonnegative("scale_by_trust_ratio", "eps", self.eps)

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        _need_params(params, "scale_by_trust_ratio")
        tree_lib.check_structure(updates, params, "scale_by_trust_ratio", "updates", "params")

        treedef, (us, ps), idx = _flat(updates, params)
        cds = [_cd(us[i]) for i in idx]
        norms = _block_norms([ps[i] for i in idx] + [us[i] for i in idx], cds + cds)

        def f(u, p_norm, u_norm, cd):
            p_norm = jnp.maximum(p_norm, self.min_norm)
            u_norm = jnp.maximum(u_norm, self.min_norm)
            zero = jnp.logical_or(p_norm == 0, u_norm == 0)
            den = jnp.where(zero, 1.0, u_norm + self.eps)
            ratio = jnp.where(zero, 1.0, self.trust_coefficient * p_norm / den)
            return (u.astype(cd) * ratio).astype(u.dtype)

        k = len(idx)
        out = {i: f(us[i], norms[j], norms[k + j], cds[j]) for j, i in enumerate(idx)}
        return _unflatten(treedef, len(us), out), state


def _leaf_mask(mask: Any, params: Any, owner: str) -> Any:
    return broadcast_mask(resolve_mask(mask, params), params, owner)


def _select(m: Any, a: jax.Array, b: jax.Array) -> jax.Array:
    """``a`` where the mask is true, else ``b`` (a Python bool mask chooses at trace time)."""
    if isinstance(m, bool | np.bool_):
        return a if m else b
    return jnp.where(m, a, b)


@transform
class scale_by_lars(GradientTransformation):
    """LARS's layer-wise step: weight decay plus the local learning rate of You et al. (2017).

    Per block ``l`` with gradient ``g`` and weight decay ``β`` (Algorithm 1 of the paper):

    .. math::
        λ^{(l)} = c\\,\\frac{\\lVert θ^{(l)}\\rVert}
        {\\lVert g^{(l)}\\rVert + β \\lVert θ^{(l)}\\rVert + ε},\\qquad
        u^{(l)} = λ^{(l)} \\left(g^{(l)} + β θ^{(l)}\\right).

    With ``combined_norm=True`` the denominator is ``‖g + βθ‖ + ε`` instead (the norm of the
    decayed gradient, which is what optax's ``lars`` computes). The ratio is 1 where ``‖θ‖``
    or the denominator is zero. Blocks outside ``weight_decay_mask`` get ``β = 0``; blocks
    outside ``trust_ratio_mask`` get ``λ = 1``.

    Args:
        trust_coefficient: the trust coefficient ``c`` (the paper's ``η``).
        eps: added to the denominator.
        weight_decay: ``β >= 0`` (a leaf, or a schedule of the step count).
        weight_decay_mask: which blocks decay (``True``: all; a pytree of bools or a function
            of the params).
        trust_ratio_mask: which blocks get the trust ratio (same forms).
        combined_norm: use ``‖g + βθ‖`` in the denominator (optax's behaviour).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_lars(trust_coefficient=1.0, weight_decay=0.5)
        >>> p, g = jnp.array([3.0, 4.0]), jnp.array([0.0, 2.5])
        >>> u, _ = tx.update(g, tx.init(p), p)
        >>> [round(float(x), 4) for x in u]  # λ = 5 / (2.5 + 2.5) = 1; u = g + 0.5 θ
        [1.5, 4.5]

    Reference: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017.
    """

    trust_coefficient: Any = 0.001
    eps: Any = 0.0
    weight_decay: Any = 0.0
    weight_decay_mask: Any = static_field(True)
    trust_ratio_mask: Any = static_field(True)
    combined_norm: bool = static_field(False, kw_only=True)

    def _check(self):
        check_nonnegative("scale_by_lars", "trust_coefficient", self.trust_coefficient)
        check_nonnegative("scale_by_lars", "eps", self.eps)
        check_nonnegative("scale_by_lars", "weight_decay", self.weight_decay)
        object.__setattr__(self, "weight_decay_mask", freeze_mask(self.weight_decay_mask))
        object.__setattr__(self, "trust_ratio_mask", freeze_mask(self.trust_ratio_mask))

    def init(self, params):
        if callable(self.weight_decay):
            return CountState(count=jnp.zeros([], jnp.int32))
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        _need_params(params, "scale_by_lars")
        tree_lib.check_structure(updates, params, "scale_by_lars", "updates", "params")
        count = state.count if isinstance(state, CountState) else None
        wd = hyper(self.weight_decay, count)
        wd_mask = _leaf_mask(self.weight_decay_mask, params, "scale_by_lars")
        tr_mask = _leaf_mask(self.trust_ratio_mask, params, "scale_by_lars")

        treedef, (us, ps, wd_masks, tr_masks), idx = _flat(updates, params, wd_mask, tr_mask)
        cds = [_cd(us[i]) for i in idx]
        gs = [us[i].astype(cd) for i, cd in zip(idx, cds, strict=True)]
        ws = [jnp.asarray(ps[i]).astype(cd) for i, cd in zip(idx, cds, strict=True)]
        betas = [
            _select(wd_masks[i], jnp.asarray(wd, tree_lib.real_dtype(cd)), 0.0)
            for i, cd in zip(idx, cds, strict=True)
        ]
        ds = [g + beta * w for g, w, beta in zip(gs, ws, betas, strict=True)]
        norms = _block_norms(ws + (ds if self.combined_norm else gs), cds + cds)
        k = len(idx)

        def f(u, d, beta, w_norm, other_norm, m_tr):
            den = other_norm if self.combined_norm else other_norm + beta * w_norm
            zero = jnp.logical_or(w_norm == 0, den == 0)
            ratio = jnp.where(
                zero,
                1.0,
                self.trust_coefficient * w_norm / jnp.where(zero, 1.0, den + self.eps),
            )
            return _select(m_tr, ratio * d, d).astype(u.dtype)

        out = _unflatten(
            treedef,
            len(us),
            {
                i: f(us[i], ds[j], betas[j], norms[j], norms[k + j], tr_masks[i])
                for j, i in enumerate(idx)
            },
        )
        if count is not None:
            state = CountState(count=tree_lib.safe_increment(count))
        return out, state


@transform
class scale_by_param_block_norm(GradientTransformation):
    """Scale each block's update by the norm of that block's parameters:
    ``u^{(l)} ← max(‖θ^{(l)}‖, s_min) · u^{(l)}``.

    Makes a unit-size update relative to the layer's size (the "relative update" idea behind
    LARS and Fromage).

    Args:
        min_scale: lower bound ``s_min`` on the factor (so zero-initialised blocks still move).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_param_block_norm()
        >>> p = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
        >>> u, _ = tx.update({"w": jnp.ones(2), "b": jnp.ones(2)}, tx.init(p), p)
        >>> [round(float(x), 4) for x in u["w"]], [round(float(x), 4) for x in u["b"]]
        ([5.0, 5.0], [0.001, 0.001])
    """

    min_scale: Any = 1e-3

    def _check(self):
        check_nonnegative("scale_by_param_block_norm", "min_scale", self.min_scale)

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        _need_params(params, "scale_by_param_block_norm")
        tree_lib.check_structure(updates, params, "scale_by_param_block_norm", "updates", "params")

        treedef, (us, ps), idx = _flat(updates, params)
        cds = [_cd(us[i]) for i in idx]
        norms = _block_norms([ps[i] for i in idx], cds)

        def f(u, norm, cd):
            s = jnp.maximum(norm, self.min_scale)
            return (u.astype(cd) * s).astype(u.dtype)

        out = {i: f(us[i], norms[j], cds[j]) for j, i in enumerate(idx)}
        return _unflatten(treedef, len(us), out), state


@transform
class scale_by_param_block_rms(GradientTransformation):
    """Scale each block's update by the root mean square of that block's parameters:
    ``u^{(l)} ← max(√(mean |θ^{(l)}|²), s_min) · u^{(l)}``.

    Args:
        min_scale: lower bound ``s_min`` on the factor.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_param_block_rms()
        >>> p = jnp.array([1.0, -1.0, 1.0, -1.0]) * 2
        >>> u, _ = tx.update(jnp.ones(4), tx.init(p), p)
        >>> [round(float(x), 4) for x in u]
        [2.0, 2.0, 2.0, 2.0]
    """

    min_scale: Any = 1e-3

    def _check(self):
        check_nonnegative("scale_by_param_block_rms", "min_scale", self.min_scale)

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        _need_params(params, "scale_by_param_block_rms")
        tree_lib.check_structure(updates, params, "scale_by_param_block_rms", "updates", "params")

        treedef, (us, ps), idx = _flat(updates, params)
        cds = [_cd(us[i]) for i in idx]
        xs = [jnp.asarray(ps[i]).astype(cd) for i, cd in zip(idx, cds, strict=True)]
        rms = _roots(xs, [jnp.mean(tree_lib.abs_sq(x)) for x in xs], mean=True)

        def f(u, r, cd):
            s = jnp.maximum(r, self.min_scale)
            return (u.astype(cd) * s).astype(u.dtype)

        out = {i: f(us[i], rms[j], cds[j]) for j, i in enumerate(idx)}
        return _unflatten(treedef, len(us), out), state


@transform
class normalize_by_update_norm(GradientTransformation):
    """Divide the updates by their global norm: ``u ← s · u / (‖u‖ + ε)``.

    ``‖u‖`` is the norm over every parameter together, so the step always has length
    ``≈ |s|`` (normalised gradient descent).

    Args:
        scale_factor: the factor ``s`` (``-α`` gives a descent step of length ``α``).
        eps: added to the norm (keeps a zero update at zero).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.normalize_by_update_norm(eps=0.0)
        >>> u, _ = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))
        >>> round(float(u["a"][0]), 4), round(float(u["b"][0]), 4)
        (0.6, 0.8)
    """

    scale_factor: Any = 1.0
    eps: Any = 1e-6

    def _check(self):
        check_range("normalize_by_update_norm", "scale_factor", self.scale_factor)
        check_nonnegative("normalize_by_update_norm", "eps", self.eps)

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        norm = _global_norm(updates)
        den = norm + self.eps
        factor = self.scale_factor / jnp.where(den == 0, 1.0, den)
        factor = jnp.where(den == 0, 0.0, factor)

        def f(u):
            if u is None:
                return None
            return (u.astype(_cd(u)) * factor).astype(u.dtype)

        return _map(f, updates), state


@transform
class _fromage_step(GradientTransformation):
    """Fromage's step on a trust-ratio-scaled update ``r``:
    ``u ← −α (1 + α²)^{-1/2} r + ((1 + α²)^{-1/2} − 1) θ``, so ``θ + u = (θ − α r) / √(1 + α²)``.

    Holding the learning rate itself (not ``α/√(1+α²)``) keeps it a leaf that
    :func:`gradtx.hyperparams` reports and :func:`gradtx.replace` changes, constant or scheduled.
    """

    learning_rate: Any

    def init(self, params):
        if callable(self.learning_rate):
            return CountState(count=jnp.zeros([], jnp.int32))
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        _need_params(params, "fromage")
        count = state.count if isinstance(state, CountState) else None
        lr = hyper(self.learning_rate, count)
        shrink = (1 + lr**2) ** -0.5

        def f(u, p):
            if u is None:
                return None
            cd = _cd(u)
            out = -lr * shrink * u.astype(cd) + (shrink - 1) * jnp.asarray(p).astype(cd)
            return out.astype(u.dtype)

        if count is not None:
            state = CountState(count=tree_lib.safe_increment(count))
        return _map(f, updates, params), state
