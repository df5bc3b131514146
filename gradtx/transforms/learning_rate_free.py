"""Learning-rate-free Adam relatives and DoWG: step sizes estimated from the distance travelled.

- D-Adaptation (Defazio & Mishchenko, arXiv 2301.07733) keeps a lower bound ``d`` on the
  distance from the start to a solution, built from ``⟨g, s⟩`` sums, and scales Adam's step by
  it: :class:`dadapt_adamw`.
- Prodigy (Mishchenko & Defazio, arXiv 2306.06101) bounds the distance with ``⟨g, x_0 − x⟩``
  weighted by ``d²``, which adapts faster, and puts ``d`` into Adam's moments:
  :class:`prodigy`.
- DoWG (Khaled, Mishchenko & Jin, arXiv 2305.16284) is DoG with the squared gradient norms
  weighted by the squared distance estimate: :class:`scale_by_dowg` and :func:`dowg`.

Names, arguments and state layouts are optax.contrib's. The update is computed in at least
float32 (see :func:`gradtx.numerics.compute_dtype`) and cast to the parameters' dtype; the
scalar state (``d``, the weighted sums) is kept in the widest compute dtype of the params, and
Prodigy's and D-Adaptation's moments (which hold ``d·g``, with ``d`` from 1e-6) in each leaf's
compute dtype: float32 for float16 and bfloat16 parameters, where they would flush to zero.
Sums that can overflow saturate at the largest finite value of their dtype, and an estimate of
``d`` that is not finite (or whose denominator is zero) is ignored, so state stays finite. As
with Adam, once squared gradients overflow (``|g| > 1.8e19`` in float32) the second moment sits
at its cap and the step is no longer independent of the gradient's scale.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    ScalarOrSchedule,
    chain,
    check_decay,
    check_nonnegative,
    check_range,
    hyper,
    identity,
    static_field,
    transform,
    user_facing,
)
from gradtx.numerics import tree_map_none as _map
from gradtx.safe_math import _global_norms, _saturate
from gradtx.transforms.adam_relatives_2021 import _real_dot, _scalar_dtype
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = [
    "ProdigyState",
    "prodigy",
    "DAdaptAdamWState",
    "dadapt_adamw",
    "DoWGState",
    "scale_by_dowg",
    "dowg",
]


# ----------------------------------------------------------------------------------------------
# Shared helpers.
def _wide_zeros(params: Any, real: bool = False) -> Any:
    """Zeros shaped like each leaf in its compute dtype (float32 for 16-bit leaves; the real
    dtype with ``real=True``). Prodigy's and D-Adaptation's moments hold ``d·g`` with ``d``
    starting at 1e-6: in float16 they would flush to zero and the step would blow up."""

    def zeros(p):
        if p is None:
            return None
        dt = tree_lib.compute_dtype(jnp.result_type(p))
        return tree_lib.full_like(p, 0, tree_lib.real_dtype(dt) if real else dt)

    return _map(zeros, params)


def _finite(x: jax.Array) -> jax.Array:
    """``x`` clipped to the finite range of its (real) dtype, sign kept; complex ``x`` and NaN
    are returned as they are."""
    if jnp.iscomplexobj(x):
        return x
    top = np.asarray(jnp.finfo(x.dtype).max, x.dtype)
    return jnp.clip(x, -top, top)


def _check_betas(owner: str, betas: Any) -> tuple[Any, Any]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError) as e:
        raise TypeError(f"{owner}: betas must be a pair (b1, b2), got {betas!r}") from e
    check_decay(owner, "betas[0]", b1)
    check_decay(owner, "betas[1]", b2)
    return b1, b2


def _l1(tree: Any, dtype: Any) -> jax.Array:
    """``Σ |x|`` over every element of every leaf, in ``dtype``, saturating instead of
    overflowing. A complex entry counts its modulus (as the authors' code and optax)."""
    parts = [
        jnp.sum(jnp.abs(x)).astype(dtype) for x in jax.tree_util.tree_leaves(tree) if x is not None
    ]
    return _saturate(sum(parts, jnp.zeros([], dtype)))


def _new_estimate(d: jax.Array, num: jax.Array, den: jax.Array) -> jax.Array:
    """``max(d, num / den)``; ``d`` itself where ``den`` is 0 (no gradient seen yet) or the
    ratio is not finite (an overflow), so the estimate never becomes NaN or infinite."""
    ok = den > 0
    d_hat = num / jnp.where(ok, den, 1.0)
    return jnp.where(ok & jnp.isfinite(d_hat), jnp.maximum(d, d_hat), d)


def _sum_update(r: jax.Array, decay: jax.Array, term: jax.Array) -> jax.Array:
    """``decay · r + term`` clipped to the finite range; ``r`` unchanged where that is NaN (an
    overflow of terms of opposite signs, at gradients whose squares overflow)."""
    new = _finite(decay * r + term)
    return jnp.where(jnp.isnan(new), r, new)


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` with ``0`` where ``den`` is 0 (zero moments over a zero denominator)."""
    zero = den == 0
    return jnp.where(zero, jnp.zeros((), num.dtype), num / jnp.where(zero, 1.0, den))


def _unzip(tree: Any, like: Any, n: int) -> tuple[Any, ...]:
    """Split a tree of ``n``-tuples (one per leaf of ``like``) into ``n`` trees."""
    treedef = jax.tree_util.tree_structure(like, is_leaf=tree_lib.is_none)
    parts = treedef.flatten_up_to(tree)
    return tuple(treedef.unflatten([p[i] for p in parts]) for i in range(n))


def _leaf_dtypes(dtype: Any) -> tuple[Any, Any]:
    """A leaf's compute dtype and its real counterpart."""
    cd = tree_lib.compute_dtype(dtype)
    return cd, tree_lib.real_dtype(cd)


# ----------------------------------------------------------------------------------------------
# Prodigy.


class ProdigyState(NamedTuple):
    """Prodigy's state (optax.contrib's layout): Adam's moments of ``d g`` (``exp_avg``,
    ``exp_avg_sq``), the weighted gradient sum ``s`` (``grad_sum``), the initial parameters,
    the estimate ``d`` (``estim_lr``), the weighted sum ``r`` (``numerator_weighted``) and the
    step ``count``. ``s`` and ``r`` are kept divided by ``d_0`` (their ratio is unchanged)."""

    exp_avg: Any
    exp_avg_sq: Any
    grad_sum: Any
    params0: Any
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


@transform
class prodigy(GradientTransformation):
    """Prodigy: Adam whose step size ``d`` estimates the distance to a solution.

    With ``k`` the number of steps taken before this one, ``γ_k`` the learning rate (a
    multiplier, 1 by default), ``β3 = √β2`` unless given and ``c`` = ``estim_lr_coef``
    (Algorithm 3 of the paper, "Prodigy (Adam version)"; the paper's ``(1 − β3)`` factors of
    ``r`` and ``s`` cancel in ``d̂`` and are left out):

    .. math::
        m ← β_1 m + (1-β_1) d_k g,\\quad v ← β_2 v + (1-β_2) d_k^2 g^2,\\\\
        r ← β_3 r + γ_k d_k^2 ⟨g, x_0 - x⟩,\\quad s ← β_3 s + γ_k d_k^2 g,\\quad
        d_{k+1} = \\max\\Big(d_k, c\\,\\frac{r}{\\lVert s\\rVert_1}\\Big),\\\\
        u = -γ_k d_k \\Big(\\frac{m}{\\sqrt v + d_k ε} + λ x\\Big).

    ``λ`` (``weight_decay``) is decoupled as in the authors' code (the paper's box has none).
    ``safeguard_warmup`` drops ``γ_k`` from ``s`` (the authors' remedy for a learning-rate
    warmup). While ``‖s‖₁`` is 0 (zero gradients so far) ``d`` stays where it is.

    Differences from optax.contrib, on purpose (the paper's box is unambiguous on both): optax
    always applies Adam's bias correction, multiplying ``γ_k d_k`` everywhere it appears (the
    step, ``r`` and ``s``) by ``√(1 − β2^{k+1}) / (1 − β1^{k+1})``, and it scales ``ε`` by the
    updated ``d_{k+1}``, as the authors' code also does (the box has ``d_k ε``).
    ``bias_correction=True, eps_uses_new_d=True`` give optax's numbers (``bias_correction`` is
    the authors' ``use_bias_correction``, off by default there too). The two forms of ``ε``
    differ only while ``d`` jumps, early on.

    Complex parameters: ``g²`` is ``|g|²`` and ``⟨g, x_0 − x⟩`` is its real part. ``v``
    saturates at the largest finite value of its dtype.

    Args:
        learning_rate: ``γ`` (or a schedule of ``k``); 1 is the paper's method.
        betas: ``(β1, β2)``, each in [0, 1).
        beta3: decay of ``r`` and ``s``, in [0, 1); ``None`` for ``√β2``.
        eps: ``ε``, scaled by ``d`` in the denominator.
        estim_lr0: ``d_0 > 0``, the initial (under-)estimate.
        estim_lr_coef: ``c``, multiplies every estimate ``d̂``.
        weight_decay: ``λ >= 0``, decoupled.
        safeguard_warmup: leave ``γ_k`` out of ``s``.
        bias_correction: Adam's bias correction of the step size (optax's form).
        eps_uses_new_d: scale ``ε`` by ``d_{k+1}`` instead of ``d_k`` (the authors' code and
            optax).

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> from gradtx.transforms.learning_rate_free import prodigy
        >>> f = lambda x: jnp.sum((x - 3.0) ** 2)
        >>> opt, x = prodigy(), jnp.zeros(2)
        >>> state = opt.init(x)
        >>> for _ in range(300):  # d grows from 1e-6 to the distance to travel
        ...     u, state = opt.update(jax.grad(f)(x), state, x)
        ...     x = gradtx.apply_updates(x, u)
        >>> [round(float(v), 2) for v in x]
        [3.0, 3.0]

    Reference: Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner", ICML 2024, arXiv 2306.06101 (Algorithm 3); the authors' code at
    github.com/konstmish/prodigy.
    """

    learning_rate: ScalarOrSchedule = 1.0
    betas: Any = (0.9, 0.999)
    beta3: Any = None
    eps: Any = 1e-8
    estim_lr0: Any = 1e-6
    estim_lr_coef: Any = 1.0
    weight_decay: Any = 0.0
    safeguard_warmup: bool = static_field(False)
    bias_correction: bool = static_field(False, kw_only=True)
    eps_uses_new_d: bool = static_field(False, kw_only=True)

    def _check(self):
        o = "prodigy"
        check_range(o, "learning_rate", self.learning_rate, low=0.0)
        object.__setattr__(self, "betas", _check_betas(o, self.betas))
        if self.beta3 is not None:
            check_decay(o, "beta3", self.beta3)
        check_nonnegative(o, "eps", self.eps)
        check_range(o, "estim_lr0", self.estim_lr0, low=0.0, low_open=True)
        check_nonnegative(o, "estim_lr_coef", self.estim_lr_coef)
        check_nonnegative(o, "weight_decay", self.weight_decay)

    def init(self, params):
        dt = _scalar_dtype(params)
        return ProdigyState(
            exp_avg=_wide_zeros(params),
            exp_avg_sq=_wide_zeros(params, real=True),
            grad_sum=_wide_zeros(params),
            params0=_map(lambda p: None if p is None else jnp.asarray(p), params),
            estim_lr=jnp.asarray(self.estim_lr0, dt),
            numerator_weighted=jnp.zeros([], dt),
            count=jnp.zeros([], jnp.int32),
        )

    def update(self, updates, state, params=None, **extra_args):
        o = "prodigy"
        if params is None:
            raise ValueError(f"{o}: update needs params (call update(grads, state, params))")
        tree_lib.check_structure(updates, state.exp_avg, o, "updates", "state (exp_avg)")
        dt = state.estim_lr.dtype
        b1, b2 = (jnp.asarray(b, dt) for b in self.betas)
        b3 = jnp.sqrt(b2) if self.beta3 is None else jnp.asarray(self.beta3, dt)
        k = state.count
        gamma = jnp.asarray(hyper(self.learning_rate, k)).astype(dt)
        d = state.estim_lr
        d0 = jnp.asarray(self.estim_lr0, dt)
        dlr = d * gamma
        if self.bias_correction:
            t = tree_lib.safe_increment(k).astype(dt)
            dlr = dlr * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        s_coef = d / d0 * (d if self.safeguard_warmup else dlr)

        delta = _map(
            lambda x0, x: None if x0 is None else _as_cd(x0, x) - _as_cd(x, x0),
            state.params0,
            params,
        )
        r = _sum_update(state.numerator_weighted, b3, d / d0 * dlr * _real_dot(updates, delta, dt))

        def moments(g, m, v0, s):
            if g is None:
                return None, None, None
            g = tree_lib.as_array(g)
            v, vdt = v0, tree_lib.as_array(v0).dtype
            cd, rd = _leaf_dtypes(g.dtype)
            dg = tree_lib.cast(g, cd) * d.astype(rd)
            m = b1.astype(rd) * tree_lib.cast(m, cd) + (1 - b1).astype(rd) * dg
            v = b2.astype(rd) * tree_lib.cast(v, rd) + (1 - b2).astype(rd) * tree_lib.abs_sq(dg)
            s = b3.astype(rd) * tree_lib.cast(s, cd) + s_coef.astype(rd) * tree_lib.cast(g, cd)
            return _finite(m), _saturate(tree_lib.cast(v, vdt)), _finite(s)

        m, v, s = _unzip(
            _map(moments, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum), updates, 3
        )
        l1 = _l1(s, dt)
        d_new = _new_estimate(d, jnp.asarray(self.estim_lr_coef, dt) * r, l1)
        d_eps = (d_new if self.eps_uses_new_d else d) * jnp.asarray(self.eps, dt)
        wd = jnp.asarray(self.weight_decay, dt)

        def step(g, m, v, x):
            if g is None:
                return None
            cd, rd = _leaf_dtypes(g.dtype)
            den = jnp.sqrt(v.astype(rd)) + d_eps.astype(rd)
            u = _safe_div(m, den.astype(cd)) + wd.astype(rd) * tree_lib.cast(x, cd)
            return tree_lib.cast(-dlr.astype(rd) * u, g.dtype)

        out = _map(step, updates, m, v, params)
        return out, ProdigyState(
            exp_avg=tree_lib.tree_cast_like(m, state.exp_avg),
            exp_avg_sq=v,
            grad_sum=tree_lib.tree_cast_like(s, state.grad_sum),
            params0=state.params0,
            estim_lr=d_new,
            numerator_weighted=r,
            count=tree_lib.safe_increment(k),
        )


def _as_cd(x: Any, like: Any) -> jax.Array:
    """``x`` in the compute dtype of ``x`` and ``like`` together."""
    x = tree_lib.as_array(x)
    dt = jnp.promote_types(x.dtype, jnp.result_type(like))
    return tree_lib.cast(x, tree_lib.compute_dtype(dt))


# ----------------------------------------------------------------------------------------------
# D-Adaptation (Adam).


class DAdaptAdamWState(NamedTuple):
    """D-Adapted AdamW's state (optax.contrib's layout): the momentum of ``γ d g``
    (``exp_avg``), the second moment of ``g`` (``exp_avg_sq``), the weighted sum ``s``
    (``grad_sum``), the estimate ``d`` (``estim_lr``), the weighted sum ``r``
    (``numerator_weighted``) and the step ``count``."""

    exp_avg: Any
    exp_avg_sq: Any
    grad_sum: Any
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


@transform
class dadapt_adamw(GradientTransformation):
    """D-Adapted AdamW: Adam whose step size ``d`` is a lower bound on the distance to a
    solution, built from the gradients it has seen.

    With ``k`` the number of steps taken before this one, ``λ_k = γ_k d_k`` and
    ``A = diag(√v + ε)`` (D-Adaptation's Adam algorithm, in the form of the authors' code:
    ``⟨g, s⟩`` is weighted by the ``v`` and ``s`` of before the step):

    .. math::
        r ← \\sqrt{β_2}\\, r + (1-\\sqrt{β_2}) λ_k ⟨g, s⟩_{A^{-1}},\\quad
        m ← β_1 m + (1-β_1) λ_k g,\\quad v ← β_2 v + (1-β_2) g^2,\\\\
        s ← \\sqrt{β_2}\\, s + (1-\\sqrt{β_2}) λ_k g,\\quad
        d_{k+1} = \\max\\Big(d_k, \\frac{r}{(1-\\sqrt{β_2}) \\lVert s\\rVert_1}\\Big),\\quad
        u = -\\frac{m}{\\sqrt v + ε} - λ_k λ x,

    with ``λ`` the decoupled ``weight_decay``. While ``‖s‖₁`` is 0 (zero gradients so far)
    ``d`` stays where it is; where ``√v + ε`` is 0 (``ε = 0``, zero gradients) the quotients
    are 0.

    Difference from optax.contrib, on purpose: optax always multiplies ``λ_k`` by Adam's bias
    correction ``√(1 − β2^{k+1}) / (1 − β1^{k+1})``; the authors' code does not by default
    (``use_bias_correction=False``). ``bias_correction=True`` gives optax's numbers.

    Complex parameters: ``g²`` is ``|g|²`` and ``⟨g, s⟩`` is its real part. ``v`` saturates at
    the largest finite value of its dtype.

    Args:
        learning_rate: ``γ`` (or a schedule of ``k``); 1 is the paper's method.
        betas: ``(β1, β2)``, each in [0, 1).
        eps: ``ε``, added to ``√v``.
        estim_lr0: ``d_0 > 0``, the initial (under-)estimate.
        weight_decay: ``λ >= 0``, decoupled.
        bias_correction: Adam's bias correction of ``λ_k`` (optax's form).

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> from gradtx.transforms.learning_rate_free import dadapt_adamw
        >>> f = lambda x: jnp.sum((x - 3.0) ** 2)
        >>> opt, x = dadapt_adamw(), jnp.zeros(2)
        >>> state = opt.init(x)
        >>> for _ in range(300):  # d grows from 1e-6 to about the distance to travel
        ...     u, state = opt.update(jax.grad(f)(x), state, x)
        ...     x = gradtx.apply_updates(x, u)
        >>> [round(float(v), 1) for v in x]
        [3.0, 3.0]

    Reference: Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML
    2023, arXiv 2301.07733 (the Adam variant); the authors' code at
    github.com/facebookresearch/dadaptation.
    """

    learning_rate: ScalarOrSchedule = 1.0
    betas: Any = (0.9, 0.999)
    eps: Any = 1e-8
    estim_lr0: Any = 1e-6
    weight_decay: Any = 0.0
    bias_correction: bool = static_field(False, kw_only=True)

    def _check(self):
        o = "dadapt_adamw"
        check_range(o, "learning_rate", self.learning_rate, low=0.0)
        object.__setattr__(self, "betas", _check_betas(o, self.betas))
        check_nonnegative(o, "eps", self.eps)
        check_range(o, "estim_lr0", self.estim_lr0, low=0.0, low_open=True)
        check_nonnegative(o, "weight_decay", self.weight_decay)

    def init(self, params):
        dt = _scalar_dtype(params)
        return DAdaptAdamWState(
            exp_avg=_wide_zeros(params),
            exp_avg_sq=_wide_zeros(params, real=True),
            grad_sum=_wide_zeros(params),
            estim_lr=jnp.asarray(self.estim_lr0, dt),
            numerator_weighted=jnp.zeros([], dt),
            count=jnp.zeros([], jnp.int32),
        )

    def update(self, updates, state, params=None, **extra_args):
        o = "dadapt_adamw"
        if params is None:
            raise ValueError(f"{o}: update needs params (call update(grads, state, params))")
        tree_lib.check_structure(updates, state.exp_avg, o, "updates", "state (exp_avg)")
        dt = state.estim_lr.dtype
        b1, b2 = (jnp.asarray(b, dt) for b in self.betas)
        sb2 = jnp.sqrt(b2)
        k = state.count
        gamma = jnp.asarray(hyper(self.learning_rate, k)).astype(dt)
        d = state.estim_lr
        dlr = d * gamma
        if self.bias_correction:
            t = tree_lib.safe_increment(k).astype(dt)
            dlr = dlr * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        eps = jnp.asarray(self.eps, dt)

        # ⟨g, s⟩ weighted by the denominator of before the step
        s_weighted = _map(
            lambda s, v: (
                None
                if s is None
                else _safe_div(s, (jnp.sqrt(v) + eps.astype(v.dtype)).astype(s.dtype))
            ),
            state.grad_sum,
            state.exp_avg_sq,
        )
        r = _sum_update(
            state.numerator_weighted, sb2, (1 - sb2) * dlr * _real_dot(updates, s_weighted, dt)
        )

        def moments(g, m, v0, s):
            if g is None:
                return None, None, None
            g = tree_lib.as_array(g)
            v, vdt = v0, tree_lib.as_array(v0).dtype
            cd, rd = _leaf_dtypes(g.dtype)
            lg = tree_lib.cast(g, cd) * dlr.astype(rd)
            m = b1.astype(rd) * tree_lib.cast(m, cd) + (1 - b1).astype(rd) * lg
            v = b2.astype(rd) * tree_lib.cast(v, rd) + (1 - b2).astype(rd) * tree_lib.abs_sq(
                tree_lib.cast(g, cd)
            )
            s = sb2.astype(rd) * tree_lib.cast(s, cd) + (1 - sb2).astype(rd) * lg
            return _finite(m), _saturate(tree_lib.cast(v, vdt)), _finite(s)

        m, v, s = _unzip(
            _map(moments, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum), updates, 3
        )
        d_new = _new_estimate(d, r, (1 - sb2) * _l1(s, dt))
        wd = jnp.asarray(self.weight_decay, dt)

        def step(g, m, v, x):
            if g is None:
                return None
            cd, rd = _leaf_dtypes(g.dtype)
            den = jnp.sqrt(v.astype(rd)) + eps.astype(rd)
            u = _safe_div(m, den.astype(cd)) + (dlr * wd).astype(rd) * tree_lib.cast(x, cd)
            return tree_lib.cast(-u, g.dtype)

        out = _map(step, updates, m, v, params)
        return out, DAdaptAdamWState(
            exp_avg=tree_lib.tree_cast_like(m, state.exp_avg),
            exp_avg_sq=v,
            grad_sum=tree_lib.tree_cast_like(s, state.grad_sum),
            estim_lr=d_new,
            numerator_weighted=r,
            count=tree_lib.safe_increment(k),
        )


# ----------------------------------------------------------------------------------------------
# DoWG.


class DoWGState(NamedTuple):
    """DoWG's state (optax.contrib's layout): the initial parameters, the weighted sum
    ``v = Σ r̄_i² ‖g_i‖²`` (``weighted_sq_norm_grads``) and ``r̄²`` (``estim_sq_dist``)."""

    init_params: Any
    weighted_sq_norm_grads: jax.Array
    estim_sq_dist: jax.Array


@transform
class scale_by_dowg(GradientTransformation):
    """Distance over Weighted Gradients (DoWG): one learning-rate-free step size for all
    parameters, DoG's with the gradient norms weighted by the distance estimate.

    Khaled, Mishchenko & Jin (2023), Algorithm 1 ("DoWG"), with global norms and ``ε`` added
    to the denominator:

    .. math::
        \\bar r_t^2 = \\max(\\bar r_{t-1}^2, \\lVert x_t - x_0\\rVert^2),\\quad
        v_t = v_{t-1} + \\bar r_t^2 \\lVert g_t\\rVert^2,\\quad
        u_t = \\frac{\\bar r_t^2}{\\sqrt{v_t} + ε}\\, g_t,

    from ``v_{−1} = 0`` and ``r̄²_{−1}`` = ``init_estim_sq_dist`` (``ε`` when ``None``: optax's
    choice). The paper has no ``ε`` and starts from a small ``r_ε``: ``eps=0.0,
    init_estim_sq_dist=r_ε**2`` is its Algorithm 1 exactly (with ``ε = 0`` a zero gradient
    gives a zero update). The output is ``+η_t g_t``: chain ``scale_by_learning_rate`` for
    descent. ``init`` must receive the real initial parameters (they are stored).

    ``v`` and ``r̄²`` saturate at the largest finite value of their dtype, and the denominator
    is never below ``r̄_t ‖g_t‖`` (an identity, since ``v_t ≥ r̄_t² ‖g_t‖²``), computed from the
    norms without squaring them: a step is at most ``r̄_t`` long even when ``v`` sits at its
    cap, and the norms are correct at any finite scale. The numbers are optax's otherwise.

    Args:
        init_estim_sq_dist: ``r̄²_{−1}``, the initial squared distance estimate (``None``:
            ``eps``).
        eps: added to ``√v_t`` (and the default initial squared distance).

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.transforms.learning_rate_free import scale_by_dowg
        >>> tx = scale_by_dowg(init_estim_sq_dist=0.25, eps=0.0)
        >>> p = jnp.array([3.0, 4.0])
        >>> u, _ = tx.update(jnp.array([0.0, 2.0]), tx.init(p), p)
        >>> [round(float(x), 4) for x in u]  # r̄² / (r̄ ‖g‖) · g = 0.5 / 2 · g
        [0.0, 0.5]

    Reference: Khaled, Mishchenko & Jin, "DoWG Unleashed: An Efficient Universal
    Parameter-Free Gradient Descent Method", NeurIPS 2023, arXiv 2305.16284.
    """

    init_estim_sq_dist: Any = None
    eps: Any = 1e-4

    def _check(self):
        o = "scale_by_dowg"
        if self.init_estim_sq_dist is not None:
            check_nonnegative(o, "init_estim_sq_dist", self.init_estim_sq_dist)
        check_nonnegative(o, "eps", self.eps)

    def init(self, params):
        dt = _scalar_dtype(params)
        r2 = self.eps if self.init_estim_sq_dist is None else self.init_estim_sq_dist
        return DoWGState(
            init_params=_map(lambda p: None if p is None else jnp.asarray(p), params),
            weighted_sq_norm_grads=jnp.zeros([], dt),
            estim_sq_dist=jnp.asarray(r2, dt),
        )

    def update(self, updates, state, params=None, **extra_args):
        o = "scale_by_dowg"
        if params is None:
            raise ValueError(f"{o}: update needs params (call update(updates, state, params))")
        tree_lib.check_structure(updates, state.init_params, o, "updates", "params")
        dt = state.estim_sq_dist.dtype
        delta = _map(
            lambda x, x0: None if x is None else _as_cd(x, x0) - _as_cd(x0, x),
            params,
            state.init_params,
        )
        dist, g_norm = (n.astype(dt) for n in _global_norms(delta, updates))
        r2 = jnp.maximum(state.estim_sq_dist, _saturate(dist * dist))
        rg = jnp.sqrt(r2) * g_norm  # r̄_t ‖g_t‖, without squaring the gradient norm
        v = _saturate(state.weighted_sq_norm_grads + _saturate(rg * rg))
        # v ≥ (r̄ ‖g‖)²: the floor binds only when v sits at its cap or underflowed
        den = jnp.maximum(jnp.sqrt(v), rg) + jnp.asarray(self.eps, dt)
        eta = _safe_div(r2, den)

        def f(g):
            if g is None:
                return None
            cd, rd = _leaf_dtypes(g.dtype)
            return tree_lib.cast(tree_lib.cast(g, cd) * eta.astype(rd), g.dtype)

        out = _map(f, updates)
        return out, DoWGState(
            init_params=state.init_params, weighted_sq_norm_grads=v, estim_sq_dist=r2
        )


@user_facing
def dowg(
    learning_rate: ScalarOrSchedule = 1.0,
    init_estim_sq_dist: Any = None,
    eps: Any = 1e-4,
    weight_decay: Any = None,
    mask: Any = None,
) -> chain:
    """DoWG: optional weight decay added to the gradient, :class:`scale_by_dowg`, then ``−α``
    (``α = 1`` is the paper's method; a schedule multiplies DoWG's step size).

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> from gradtx.transforms.learning_rate_free import dowg
        >>> f = lambda x: jnp.sum((x - 3.0) ** 2)
        >>> opt, x = dowg(), jnp.zeros(2)
        >>> state = opt.init(x)
        >>> for _ in range(200):  # r̄ grows from 1e-2 until it matches the distance to travel
        ...     u, state = opt.update(jax.grad(f)(x), state, x)
        ...     x = gradtx.apply_updates(x, u)
        >>> [round(float(v), 2) for v in x]
        [3.0, 3.0]

    Reference: Khaled, Mishchenko & Jin, arXiv 2305.16284.
    """
    return chain(
        add_decayed_weights(weight_decay, mask) if weight_decay is not None else identity(),
        scale_by_dowg(init_estim_sq_dist, eps),
        scale_by_learning_rate(learning_rate),
    )
