"""ACProp and MADGRAD (2021) and the MoMo step sizes (2023): adaptive methods with
optax.contrib's names.

- ACProp (Zhuang, Ding, Tang, Dvornek, Tatikonda & Duncan, arXiv 2110.05454) divides the
  gradient by the spread of past gradients around their EMA (AdaBelief's centred second
  moment) taken *before* this step: numerator and denominator are decorrelated.

- MADGRAD (Defazio & Jelassi, arXiv 2101.11075) is dual averaging with a cube-root AdaGrad
  denominator and momentum written as an average of iterates: the update moves the parameters
  a fraction ``1 − β`` of the way to the dual-averaging point ``z = x0 − s / (∛ν + ε)``.
- MoMo and MoMo-Adam (Schaipp, Ohana, Eickenberg, Defazio & Gower, arXiv 2305.07583) take
  SGD-with-momentum's (or Adam's) direction with a Polyak-type step size, from a model of the
  loss built from averaged losses, gradients and ``⟨g, x⟩``; ``update`` needs ``value=``.

The update is computed in at least float32 (see :func:`gradtx.numerics.compute_dtype`) and
cast to the parameters' dtype. Names, arguments and state layout are optax.contrib's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    ScalarOrSchedule,
    chain,
    check_decay,
    check_nonnegative,
    check_range,
    hyper,
    static_field,
    transform,
    user_facing,
)
from gradtx.numerics import Scalar
from gradtx.numerics import tree_map_none as _map
from gradtx.safe_math import _saturate
from gradtx.transforms.adam_variants import ScaleByBeliefState
from gradtx.transforms.adaptive import _nu_init
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = [
    "scale_by_acprop",
    "acprop",
    "MadgradState",
    "scale_by_madgrad",
    "madgrad",
    "MomoState",
    "momo",
    "MomoAdamState",
    "momo_adam",
]


def _float_dtype() -> Any:
    """JAX's default float dtype: the dtype per-step scalars are formed in."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _unzip3(tree: Any, like: Any) -> tuple[Any, Any, Any]:
    """Split a tree of 3-tuples (one per leaf of ``like``) into three trees."""
    treedef = jax.tree_util.tree_structure(like, is_leaf=tree_lib.is_none)
    parts = treedef.flatten_up_to(tree)
    return tuple(treedef.unflatten([p[i] for p in parts]) for i in range(3))


# ----------------------------------------------------------------------------------------------
# ACProp.


@transform
class scale_by_acprop(GradientTransformation):
    """ACProp's scaling: the gradient over the centred second moment of the steps before.

    With ``t`` the step (1 at the first update) and the paper's ACProp algorithm (the
    asynchronous, centred form of AdaBelief; the authors' code for the bias correction and the
    first step):

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1) g_t,\\quad
        s_t = β_2 s_{t-1} + (1-β_2) |g_t - m_t|^2 + ε_{root},\\\\
        u_t = \\frac{g_t}{\\sqrt{s_{t-1} / (1-β_2^{t-1})} + ε}\\ (t > 1),\\qquad
        u_1 = \\frac{g_1}{1 + ε}.

    The numerator is this step's gradient and the denominator holds information up to step
    ``t − 1`` only (the asynchronous update); the first step, with no ``s`` yet, is a plain
    gradient step. ``m_t`` serves only to centre ``s``.

    optax.contrib centres on the momentum *before* this step, ``|g_t − m_{t−1}|²``
    (``= |g_t − m_t|² / β1²``), where the paper and the authors' code use ``m_t``:
    ``center_on_previous=True`` gives optax's numbers.

    ``s`` saturates at the largest finite value of its dtype instead of overflowing (see
    :class:`gradtx.scale_by_adam`). ``b1`` and ``b2`` may be schedules of the step count.

    Args:
        b1: decay of the gradient's EMA ``m``, in [0, 1).
        b2: decay of the centred second moment ``s``, in [0, 1).
        eps: added to the denominator outside the square root, >= 0.
        eps_root: the paper's ``ε`` added to ``s`` at every step, >= 0.
        center_on_previous: centre on ``m_{t−1}`` instead of ``m_t`` (optax.contrib's choice).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_acprop(eps=0.0, eps_root=0.0)
        >>> s = tx.init(jnp.zeros(1))
        >>> u, s = tx.update(jnp.array([2.0]), s)  # the first step is the gradient
        >>> float(u[0])
        2.0
        >>> u, s = tx.update(jnp.array([1.0]), s)  # s_1 = 0.001 (2 − 0.2)², bias-corrected
        >>> round(float(u[0]), 4)  # 1 / 1.8
        0.5556

    Reference: Zhuang, Ding, Tang, Dvornek, Tatikonda & Duncan, "Momentum Centering and
    Asynchronous Update for Adaptive Gradient Methods", arXiv 2110.05454 (NeurIPS 2021), the
    ACProp algorithm; github.com/juntang-zhuang/ACProp-Optimizer.
    """

    flat_safe = True  # element by element: runs on gradtx.flat's buffers
    b1: Any = 0.9
    b2: Any = 0.999
    eps: Any = 1e-16
    eps_root: Any = 1e-16
    center_on_previous: bool = static_field(False, kw_only=True)

    def _check(self):
        owner = "scale_by_acprop"
        check_decay(owner, "b1", self.b1)
        check_decay(owner, "b2", self.b2)
        check_nonnegative(owner, "eps", self.eps)
        check_nonnegative(owner, "eps_root", self.eps_root)
        _check_flag(owner, "center_on_previous", self.center_on_previous)

    def init(self, params):
        return ScaleByBeliefState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_lib.tree_zeros_like(params),
            nu=_nu_init(params, None),
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_acprop", "updates", "state (mu)")
        b1, b2 = hyper(self.b1, state.count), hyper(self.b2, state.count)
        first = state.count == 0
        # 1 / √(1 − β2^{t−1}) for s_{t−1}; the count before this step is t − 1 (>= 1 past t = 1)
        c2 = tree_lib.bias_correction_scalar(b2, jnp.maximum(state.count, 1))
        k = {
            "b1": Scalar(b1),
            "1-b1": Scalar(1 - b1),
            "b2": Scalar(b2),
            "1-b2": Scalar(1 - b2),
            "inv_sqrt_c2": Scalar(lax.rsqrt(c2)),
            "eps": Scalar(self.eps),
            "eps_root": Scalar(self.eps_root),
        }

        def leaf(g, m, s):
            if g is None:
                return None, None, None
            g = tree_lib.as_array(g)
            m_new = tree_lib.ema_leaf(g, m, k["b1"], k["1-b1"])
            cd = tree_lib.compute_dtype(m.dtype)
            centre = m if self.center_on_previous else m_new
            err = tree_lib.abs_sq(tree_lib.cast(g, cd) - tree_lib.cast(centre, cd))
            sd = tree_lib.compute_dtype(s.dtype)
            s_old = tree_lib.cast(s, sd)
            s_new = lax.add(
                lax.add(
                    tree_lib.smul(s_old, k["b2"]), tree_lib.smul(tree_lib.cast(err, sd), k["1-b2"])
                ),
                k["eps_root"](sd),
            )
            s_new = _saturate(tree_lib.cast(_saturate(s_new), s.dtype))
            # the asynchronous denominator, from s_{t−1}; 1 at the first step (no s yet)
            root = tree_lib.smul(
                lax.sqrt(jnp.where(first, jnp.ones((), sd), s_old)), k["inv_sqrt_c2"]
            )
            den = lax.add(jnp.where(first, jnp.ones((), sd), root), k["eps"](sd))
            gc = tree_lib.cast(g, tree_lib.compute_dtype(g.dtype))
            out = lax.div(gc, tree_lib.cast(den, gc.dtype))
            return tree_lib.cast(out, g.dtype), m_new, s_new

        out, mu, nu = _unzip3(_map(leaf, updates, state.mu, state.nu), updates)
        return out, ScaleByBeliefState(count=tree_lib.safe_increment(state.count), mu=mu, nu=nu)


@user_facing
def acprop(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-16,
    eps_root: Any = 1e-16,
    weight_decay: Any = 0.0,
    mask: Any = None,
    *,
    center_on_previous: bool = False,
) -> chain:
    """ACProp: :class:`scale_by_acprop`, then decoupled weight decay (:class:`add_decayed_weights`,
    scaled by the learning rate as in AdamW), then the learning rate.

    ``center_on_previous=True`` gives optax.contrib.acprop's numbers (see
    :class:`scale_by_acprop`).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.acprop(0.1)
        >>> params = {"w": jnp.array([1.0, -1.0])}
        >>> u, state = opt.update({"w": jnp.array([3.0, -0.5])}, opt.init(params), params)
        >>> [round(float(x), 4) for x in u["w"]]  # the first step is −α g
        [-0.3, 0.05]

    Reference: Zhuang et al., arXiv 2110.05454 (NeurIPS 2021).
    """
    return chain(
        scale_by_acprop(b1, b2, eps, eps_root, center_on_previous=center_on_previous),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------------------------
# MADGRAD.


class MadgradState(NamedTuple):
    """MADGRAD's state (optax.contrib's layout).

    ``count`` is the step ``k`` (0 at the first update), ``grad_sum_sq`` the weighted sum
    ``ν = Σ λ_i |g_i|²``, ``s`` the weighted sum ``Σ λ_i g_i`` and ``x0`` the initial
    parameters, the centre of dual averaging.
    """

    count: jax.Array
    grad_sum_sq: Any
    s: Any
    x0: Any


@transform
class scale_by_madgrad(GradientTransformation):
    """MADGRAD's update: dual averaging with a cube-root denominator and iterate momentum.

    With ``k`` the number of steps taken before this one (Algorithm 1 of the paper, lines 4–8;
    ``c = 1 − momentum``):

    .. math::
        λ_k = γ_k \\sqrt{k+1},\\quad s ← s + λ_k g,\\quad ν ← ν + λ_k |g|^2,\\\\
        z = x_0 - \\frac{s}{\\sqrt[3]{ν} + ε},\\quad
        u = x_{k+1} - x_k = c\\,(z - x_k).

    The learning rate lives here, not in a later ``scale_by_learning_rate``: it weighs the
    gradients in the sums, and the update is already the full step. ``update`` needs the
    params. ``learning_rate`` may be a schedule, called with ``k``.

    optax.contrib uses ``λ_k = (γ_k + ε) √(k+1)`` (as the authors' PyTorch code does); this
    follows the paper's ``λ_k = γ_k √(k+1)``. ``scale_by_madgrad(γ + eps, ...)`` gives
    optax's numbers for a constant ``γ``.

    Args:
        learning_rate: the step size ``γ`` (or a schedule).
        momentum: the momentum ``β = 1 − c``, in [0, 1).
        eps: added to the cube root in the denominator, >= 0.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_madgrad(1.0, momentum=0.5, eps=0.0)
        >>> params = jnp.array([1.0])
        >>> u, _ = tx.update(jnp.array([8.0]), tx.init(params), params)
        >>> float(u[0])  # z = 1 − 8 / ∛64 = −1; u = 0.5 (−1 − 1)
        -1.0

    Reference: Defazio & Jelassi, "Adaptivity without Compromise: A Momentumized, Adaptive,
    Dual Averaged Gradient Method for Stochastic Optimization", arXiv 2101.11075 (JMLR 2022),
    Algorithm 1.
    """

    learning_rate: ScalarOrSchedule
    momentum: Any = 0.9
    eps: Any = 1e-6

    def _check(self):
        owner = "scale_by_madgrad"
        check_range(owner, "learning_rate", self.learning_rate, low=0.0)
        check_decay(owner, "momentum", self.momentum)
        check_nonnegative(owner, "eps", self.eps)

    def init(self, params):
        return MadgradState(
            count=jnp.zeros([], jnp.int32),
            grad_sum_sq=_nu_init(params, None),
            s=tree_lib.tree_zeros_like(params),
            x0=_map(lambda p: None if p is None else jnp.asarray(p), params),
        )

    def update(self, updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("scale_by_madgrad: update needs params")
        tree_lib.check_structure(updates, state.s, "scale_by_madgrad", "updates", "state (s)")
        fdt = _float_dtype()
        gamma = hyper(self.learning_rate, state.count)
        lam = gamma * jnp.sqrt(state.count.astype(fdt) + 1)  # line 4: λ_k = γ_k √(k + 1)
        c = 1 - self.momentum

        def leaf(g, nu, s, x0, x):
            if g is None:
                return None, None, None
            g = tree_lib.as_array(g)
            cd = tree_lib.compute_dtype(g.dtype)
            gc = tree_lib.cast(g, cd)
            s = s + tree_lib.cast(lam * gc, s.dtype)  # line 5
            nu = nu + tree_lib.cast(lam * tree_lib.abs_sq(gc), nu.dtype)  # line 6
            den = jnp.cbrt(tree_lib.cast(nu, tree_lib.real_dtype(cd))) + self.eps
            z = tree_lib.cast(x0, cd) - lax.div(tree_lib.cast(s, cd), tree_lib.cast(den, cd))
            u = c * (z - tree_lib.cast(x, cd))  # lines 7-8: x_{k+1} − x_k
            return tree_lib.cast(u, g.dtype), nu, s

        out, nu, s = _unzip3(
            _map(leaf, updates, state.grad_sum_sq, state.s, state.x0, params), updates
        )
        return out, MadgradState(
            count=tree_lib.safe_increment(state.count), grad_sum_sq=nu, s=s, x0=state.x0
        )


@user_facing
def madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: Any = 0.9,
    weight_decay: Any = 0.0,
    eps: Any = 1e-6,
) -> chain:
    """MADGRAD: :class:`add_decayed_weights` (added to the gradient, as the paper's L2 term)
    then :class:`scale_by_madgrad`, which applies the learning rate itself.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.madgrad(1.0, momentum=0.5, eps=0.0)
        >>> params = {"w": jnp.ones(2)}
        >>> u, state = opt.update({"w": jnp.full(2, 8.0)}, opt.init(params), params)
        >>> [float(x) for x in u["w"]]  # 0.5 (1 − 8 / ∛64 − 1)
        [-1.0, -1.0]

    Reference: Defazio & Jelassi, arXiv 2101.11075 (JMLR 2022).
    """
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_madgrad(learning_rate, momentum, eps),
    )


# ----------------------------------------------------------------------------------------------
# MoMo and MoMo-Adam.

# Below this value of ‖d‖² (or ‖d‖²_{D⁻¹}) no step is taken.
_TINY_SQ_NORM = float(jnp.finfo(jnp.float64).eps)


def _scalar_dtype(params: Any) -> Any:
    """The dtype of MoMo's scalar state: the widest compute dtype among the params' leaves."""
    leaves = [
        x if hasattr(x, "dtype") else jnp.asarray(x) for x in jax.tree_util.tree_leaves(params)
    ]
    dts = [tree_lib.real_dtype(tree_lib.compute_dtype(x.dtype)) for x in leaves]
    return jnp.result_type(*dts) if dts else _float_dtype()


def _real_dot(a: Any, b: Any, dtype: Any) -> jax.Array:
    """``Σ Re⟨a, b⟩`` over all leaves, accumulated in ``dtype``."""
    parts = [
        jnp.sum(
            jnp.real(
                jnp.conj(tree_lib.cast(x, tree_lib.compute_dtype(x.dtype)))
                * tree_lib.cast(y, tree_lib.compute_dtype(x.dtype))
            )
        )
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    ]
    return sum((p.astype(dtype) for p in parts), jnp.zeros([], dtype))


def _momo_step(scaled_d, d, params, barf, gamma, lb, rho, lb0, adapt, cap, alpha, wd, dtype):
    """The model step shared by MoMo and MoMo-Adam; ``scaled_d`` is ``D⁻¹ d`` (``d`` for MoMo),
    ``rho`` is MoMo-Adam's ``ρ1`` (1 for MoMo). Returns the update and the next lower bound.

    ``τ = min(cap, ((1 + αλ)(f̄ − ρ f* − γ) + ⟨d, x⟩)_+ / ⟨d, D⁻¹ d⟩)`` and
    ``u = x⁺ − x = −(αλ x + τ D⁻¹ d) / (1 + αλ)``. With ``adapt`` (MoMo*), ``f*`` is first reset
    to ``max(c / (2ρ(1 + αλ)), f*_0)`` when ``c = (1 + αλ)(f̄ − γ) + ⟨d, x⟩`` is below
    ``(1 + αλ) ρ f*``, and the next estimate is ``max((f̄ + ⟨d, x⟩ − γ − τ⟨d, D⁻¹ d⟩/2) / ρ, f*_0)``.
    """
    dn = _real_dot(d, scaled_d, dtype)
    ip = _real_dot(d, params, dtype)
    decay = 1 + alpha * wd
    if adapt:  # reset: the model at x lies below the estimate
        c = decay * (barf - gamma) + ip
        lb = jnp.where(c < decay * rho * lb, jnp.maximum(c / (2 * rho * decay), lb0), lb)
    num = jnp.maximum(decay * (barf - rho * lb - gamma) + ip, 0.0)
    small = dn <= _TINY_SQ_NORM
    tau = jnp.minimum(cap, jnp.where(small, 0.0, num / jnp.where(small, 1.0, dn)))
    if adapt:  # the model's minimum along the step taken
        lb = jnp.maximum((barf + ip - gamma - tau * dn / 2) / rho, lb0)

    def leaf(sd, x):
        if sd is None:
            return None
        cd = tree_lib.compute_dtype(x.dtype)
        u = -(alpha * wd * tree_lib.cast(x, cd) + tau * tree_lib.cast(sd, cd)) / decay
        return tree_lib.cast(u, x.dtype)

    return _map(leaf, scaled_d, params), lb.astype(dtype)


def _check_flag(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")


def _value(owner: str, value: Any, dtype: Any) -> jax.Array:
    if value is None:
        raise ValueError(
            f"{owner}: update needs the loss at params (call update(grads, state, params, "
            "value=loss))"
        )
    return jnp.asarray(value).astype(dtype)


class MomoState(NamedTuple):
    """MoMo's state (optax.contrib's layout): the averaged gradient ``exp_avg`` (``d``), loss
    ``barf`` (``f̄``) and ``⟨g, x⟩`` (``gamma``, ``γ``), the lower bound ``lb`` and the step
    ``count``."""

    exp_avg: Any
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: jax.Array


@transform
class momo(GradientTransformation):
    """MoMo: SGD with momentum and an adaptive Polyak-type step size capped at ``α``.

    With ``f`` the (minibatch) loss at ``x`` passed as ``value=``, ``f*`` the lower bound and
    ``k`` the number of steps taken before this one (Algorithm 1 of the paper; at ``k = 0`` the
    averages start from the first values, ``β`` acting as 0):

    .. math::
        d ← (1-β) g + β d,\\quad f̄ ← (1-β) f + β f̄,\\quad γ ← (1-β)⟨g, x⟩ + β γ,\\\\
        τ = \\min\\Big(α_k, \\frac{\\big((1+α_kλ)(f̄ - f^* - γ) + ⟨d, x⟩\\big)_+}
        {\\lVert d\\rVert^2}\\Big),\\quad x ← \\frac{x - τ d}{1 + α_k λ}.

    (``f̄ + ⟨d, x⟩ − γ`` is the model's value at ``x``.) With ``λ = 0`` the step is Algorithm 1's
    ``x ← x − τ d``. ``λ > 0`` is the paper's weight decay: the model step of
    ``f + λ/2 ‖x‖²`` solved exactly, which divides the whole new point by ``1 + αλ``. optax
    divides only ``x`` by it (``x/(1 + αλ) − τ d``) with the same ``τ``; with
    ``weight_decay=0`` the numbers are optax's. The learning rate is part of this transform
    (the update is the full step). When ``‖d‖² <= 2.2e-16`` no step is taken. For complex
    parameters the inner products are real, ``Re⟨a, b⟩`` (ℂⁿ taken as ℝ²ⁿ). The scalars
    ``barf``, ``gamma`` and ``lb`` are kept in at least float32.

    ``adapt_lower_bound=True`` is the paper's MoMo*, for when no good ``f*`` is known: ``lb``
    (starting at ``lower_bound = f*_0``) is an estimate that follows the model. Before the step,
    with ``c = (1+αλ)(f̄ − γ) + ⟨d, x⟩``, an estimate above the model is reset,
    ``f* ← max(c / (2(1+αλ)), f*_0)`` when ``c < (1+αλ) f*``; after it, ``f*`` becomes the
    model's value at the new point, ``max(f̄ + ⟨d, x⟩ − γ − τ‖d‖²/2, f*_0)`` (the authors'
    ``use_fstar``; optax's numbers with ``weight_decay=0``).

    Args:
        learning_rate: the cap ``α`` on the step size (or a schedule of the step count).
        beta: the momentum ``β``, in [0, 1).
        lower_bound: ``f*``, a lower bound of the loss (0 for most losses); with
            ``adapt_lower_bound``, the estimate's start and floor ``f*_0``.
        weight_decay: ``λ >= 0``.
        adapt_lower_bound: estimate ``f*`` online (MoMo*), a static bool.

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> opt = gradtx.momo()
        >>> x = jnp.array([1.0, 2.0])
        >>> f = lambda x: jnp.sum(x**2)
        >>> value, g = jax.value_and_grad(f)(x)
        >>> u, state = opt.update(g, opt.init(x), x, value=value)
        >>> [float(v) for v in x + u]  # τ = min(1, (5 − 0 − 10 + 10) / 20) = 1/4
        [0.5, 1.0]
        >>> opt = gradtx.momo(adapt_lower_bound=True)
        >>> u, state = opt.update(g, opt.init(x), x, value=value)
        >>> float(state.lb)  # the model's value after the step: 5 − (1/4)(20)/2
        2.5

    Reference: Schaipp, Ohana, Eickenberg, Defazio & Gower, "MoMo: Momentum Models for
    Adaptive Learning Rates", arXiv 2305.07583 (ICML 2024), Algorithm 1 and MoMo* (the online
    estimate of ``f*``); the authors' code, github.com/fabian-sp/MoMo (``use_fstar``).
    """

    learning_rate: ScalarOrSchedule = 1.0
    beta: Any = 0.9
    lower_bound: Any = 0.0
    weight_decay: Any = 0.0
    adapt_lower_bound: bool = static_field(False)

    def _check(self):
        check_range("momo", "learning_rate", self.learning_rate, low=0.0)
        check_decay("momo", "beta", self.beta)
        check_range("momo", "lower_bound", self.lower_bound)
        check_nonnegative("momo", "weight_decay", self.weight_decay)
        _check_flag("momo", "adapt_lower_bound", self.adapt_lower_bound)

    def init(self, params):
        dt = _scalar_dtype(params)
        return MomoState(
            exp_avg=tree_lib.tree_zeros_like(params),
            barf=jnp.zeros([], dt),
            gamma=jnp.zeros([], dt),
            lb=jnp.asarray(self.lower_bound, dt),
            count=jnp.zeros([], jnp.int32),
        )

    def update(self, updates, state, params=None, *, value=None, **extra_args):
        if params is None:
            raise ValueError("momo: update needs params")
        dt = state.barf.dtype
        f = _value("momo", value, dt)
        tree_lib.check_structure(updates, state.exp_avg, "momo", "updates", "state (exp_avg)")
        b = jnp.where(state.count == 0, 0.0, jnp.asarray(self.beta, dt)).astype(dt)

        def avg(g, d):
            if g is None:
                return None
            cd = tree_lib.compute_dtype(d.dtype)
            out = b * tree_lib.cast(d, cd) + (1 - b) * tree_lib.cast(g, cd)
            return tree_lib.cast(out, d.dtype)

        d = _map(avg, updates, state.exp_avg)
        barf = b * state.barf + (1 - b) * f
        gamma = b * state.gamma + (1 - b) * _real_dot(updates, params, dt)
        alpha = jnp.asarray(hyper(self.learning_rate, state.count)).astype(dt)
        wd = jnp.asarray(self.weight_decay).astype(dt)
        lb0 = jnp.asarray(self.lower_bound).astype(dt)
        one = jnp.ones([], dt)
        u, lb = _momo_step(
            d, d, params, barf, gamma, state.lb, one, lb0, self.adapt_lower_bound, alpha, alpha,
            wd, dt,
        )  # fmt: skip
        return u, MomoState(
            exp_avg=d,
            barf=barf,
            gamma=gamma,
            lb=lb,
            count=tree_lib.safe_increment(state.count),
        )


class MomoAdamState(NamedTuple):
    """MoMo-Adam's state (optax.contrib's layout): :class:`MomoState`'s fields and the EMA
    ``exp_avg_sq`` of ``|g|²``."""

    exp_avg: Any
    exp_avg_sq: Any
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: jax.Array


@transform
class momo_adam(GradientTransformation):
    """MoMo-Adam: Adam's direction with MoMo's adaptive step size (Algorithm 2 of the paper).

    With ``k`` the number of steps taken before this one, ``ρ1 = 1 − β1^{k+1}``,
    ``ρ2 = 1 − β2^{k+1}`` and ``f`` the loss passed as ``value=``:

    .. math::
        d ← β_1 d + (1-β_1) g,\\quad v ← β_2 v + (1-β_2) |g|^2,\\quad
        D = ε + \\sqrt{v/ρ_2},\\\\
        f̄ ← β_1 f̄ + (1-β_1) f,\\quad γ ← β_1 γ + (1-β_1)⟨g, x⟩,\\\\
        τ = \\min\\Big(\\frac{α_k}{ρ_1}, \\frac{\\big((1+α_kλ)(f̄ - ρ_1 f^* - γ) + ⟨d, x⟩
        \\big)_+}{⟨d, D^{-1} d⟩}\\Big),\\quad x ← \\frac{x - τ D^{-1} d}{1 + α_k λ}.

    The averages start at zero and are bias-corrected through ``ρ1`` (so ``τ D⁻¹ d`` uses
    ``d/ρ1``, Adam's corrected momentum, at the capped step ``α``). Weight decay and the
    difference from optax are as in :class:`momo` (optax: ``x/(1 + αλ) − τ D⁻¹ d``;
    ``weight_decay=0`` gives optax's numbers). ``adapt_lower_bound`` is :class:`momo`'s MoMo*
    with the bias correction: the reset when ``c < (1+αλ) ρ1 f*`` is to
    ``max(c / (2ρ1(1+αλ)), f*_0)``, and the new estimate
    ``max((f̄ + ⟨d, x⟩ − γ − τ⟨d, D⁻¹d⟩/2) / ρ1, f*_0)``.

    Args:
        learning_rate: the cap ``α`` (or a schedule of the step count).
        b1: decay of ``d``, ``f̄`` and ``γ``, in [0, 1).
        b2: decay of ``v``, in [0, 1).
        eps: added to ``√(v/ρ2)``, >= 0.
        lower_bound: ``f*``, a lower bound of the loss (the floor ``f*_0`` of the estimate).
        weight_decay: ``λ >= 0``.
        adapt_lower_bound: estimate ``f*`` online (MoMo*), a static bool.

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> opt = gradtx.momo_adam(1.0, eps=0.0)
        >>> x = jnp.array([1.0, 2.0])
        >>> value, g = jax.value_and_grad(lambda x: jnp.sum(x**2))(x)
        >>> u, state = opt.update(g, opt.init(x), x, value=value)
        >>> [round(float(v), 4) for v in u]  # D⁻¹d = (0.1, 0.1), τ = min(10, 0.5 / 0.06)
        [-0.8333, -0.8333]

    Reference: Schaipp, Ohana, Eickenberg, Defazio & Gower, "MoMo: Momentum Models for
    Adaptive Learning Rates", arXiv 2305.07583 (ICML 2024), Algorithm 2.
    """

    learning_rate: ScalarOrSchedule = 1e-2
    b1: Any = 0.9
    b2: Any = 0.999
    eps: Any = 1e-8
    lower_bound: Any = 0.0
    weight_decay: Any = 0.0
    adapt_lower_bound: bool = static_field(False)

    def _check(self):
        check_range("momo_adam", "learning_rate", self.learning_rate, low=0.0)
        check_decay("momo_adam", "b1", self.b1)
        check_decay("momo_adam", "b2", self.b2)
        check_nonnegative("momo_adam", "eps", self.eps)
        check_range("momo_adam", "lower_bound", self.lower_bound)
        check_nonnegative("momo_adam", "weight_decay", self.weight_decay)
        _check_flag("momo_adam", "adapt_lower_bound", self.adapt_lower_bound)

    def init(self, params):
        dt = _scalar_dtype(params)
        return MomoAdamState(
            exp_avg=tree_lib.tree_zeros_like(params),
            exp_avg_sq=_nu_init(params, None),
            barf=jnp.zeros([], dt),
            gamma=jnp.zeros([], dt),
            lb=jnp.asarray(self.lower_bound, dt),
            count=jnp.zeros([], jnp.int32),
        )

    def update(self, updates, state, params=None, *, value=None, **extra_args):
        if params is None:
            raise ValueError("momo_adam: update needs params")
        dt = state.barf.dtype
        f = _value("momo_adam", value, dt)
        tree_lib.check_structure(updates, state.exp_avg, "momo_adam", "updates", "state (exp_avg)")
        b1 = jnp.asarray(self.b1, dt)
        b2 = jnp.asarray(self.b2, dt)
        k1 = state.count.astype(dt) + 1
        rho1 = tree_lib.bias_correction_scalar(b1, k1, dt)  # 1 − β1^(k+1)
        rho2 = tree_lib.bias_correction_scalar(b2, k1, dt)

        def leaf(g, d, v):
            if g is None:
                return None, None, None
            cd = tree_lib.compute_dtype(d.dtype)
            gc = tree_lib.cast(g, cd)
            d = tree_lib.cast(b1 * tree_lib.cast(d, cd) + (1 - b1) * gc, d.dtype)
            v = b2 * tree_lib.cast(v, tree_lib.real_dtype(cd)) + (1 - b2) * tree_lib.abs_sq(gc)
            v = tree_lib.cast(v, tree_lib.real_dtype(d.dtype))
            den = self.eps + jnp.sqrt(tree_lib.cast(v, tree_lib.real_dtype(cd)) / rho2)
            return d, v, tree_lib.cast(tree_lib.cast(d, cd) / den, cd)

        d, v, scaled = _unzip3(_map(leaf, updates, state.exp_avg, state.exp_avg_sq), updates)
        barf = b1 * state.barf + (1 - b1) * f
        gamma = b1 * state.gamma + (1 - b1) * _real_dot(updates, params, dt)
        alpha = jnp.asarray(hyper(self.learning_rate, state.count)).astype(dt)
        wd = jnp.asarray(self.weight_decay).astype(dt)
        lb0 = jnp.asarray(self.lower_bound).astype(dt)
        u, lb = _momo_step(
            scaled, d, params, barf, gamma, state.lb, rho1, lb0, self.adapt_lower_bound,
            alpha / rho1, alpha, wd, dt,
        )  # fmt: skip
        return u, MomoAdamState(
            exp_avg=d,
            exp_avg_sq=v,
            barf=barf,
            gamma=gamma,
            lb=lb,
            count=tree_lib.safe_increment(state.count),
        )
