"""Adam's relatives of 2024: AdEMAMix, simplified AdEMAMix and ADOPT.

- AdEMAMix (Pagliardini, Ablin & Grangier, arXiv 2409.03137) adds a slow EMA of the gradient,
  ``β3 ≈ 0.9999``, to Adam's numerator: ``(m̂1 + α m2) / (√v̂ + ε)``.
- Simplified AdEMAMix (Morwani, Vyas, Zhang & Kakade, arXiv 2502.02431) keeps one momentum
  ``m ← β1 m + g`` (a sum, not an average) and adds ``α g`` to it.
- ADOPT (Taniguchi et al., arXiv 2411.02853) normalises the gradient by the *previous* second
  moment before the momentum, and clips it: Adam that converges for any ``β2``.

Each transform computes its normalised update in at least float32 (see
:func:`gradtx.numerics.compute_dtype`) and casts it to the gradient's dtype; squared moments
saturate at the largest finite value of their dtype instead of overflowing (see
:mod:`gradtx.transforms.adaptive`). Names, arguments and state layouts are optax.contrib's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    ScalarOrSchedule,
    _StaticFn,
    chain,
    check_count,
    check_decay,
    check_dtype,
    check_nonnegative,
    check_range,
    concrete_float,
    hyper,
    static_field,
    transform,
    user_facing,
)
from gradtx.numerics import Scalar
from gradtx.numerics import tree_map_none as _map
from gradtx.safe_math import _saturate
from gradtx.transforms.adaptive import ScaleByAdamState, _nu_init, _unzip3
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = [
    "scale_by_ademamix",
    "ademamix",
    "ScaleByAdemamixState",
    "scale_by_simplified_ademamix",
    "simplified_ademamix",
    "ScaleBySimplifiedAdEMAMixState",
    "scale_by_adopt",
    "adopt",
]


def _float_dtype() -> Any:
    """JAX's default float dtype: the dtype per-step scalars are formed in."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _unzip4(tree: Any, like: Any) -> tuple[Any, Any, Any, Any]:
    """Split a tree of 4-tuples (one per leaf of ``like``) into four trees."""
    treedef = jax.tree_util.tree_structure(like, is_leaf=tree_lib.is_none)
    parts = treedef.flatten_up_to(tree)
    return tuple(treedef.unflatten([p[i] for p in parts]) for i in range(4))


# ----------------------------------------------------------------------------------------------
# AdEMAMix.


class ScaleByAdemamixState(NamedTuple):
    """Step counts and moments of AdEMAMix (optax.contrib's layout).

    ``count`` drives the bias corrections of ``m1`` and ``nu``; ``count_m2`` (equal to it
    unless you reset it) is what the schedules of ``b3`` and ``alpha`` and their warmups see.
    ``m1`` is the fast EMA of the gradient, ``m2`` the slow one, ``nu`` the EMA of ``|g|²``.
    """

    count: jax.Array
    count_m2: jax.Array
    m1: Any
    m2: Any
    nu: Any


def _b3_warmup_log(b_start: Any, b3: Any, s: Any) -> jax.Array:
    """``ln f_β3``: the paper's β3 scheduler in log space.

    ``f = exp(ln β_start ln β3 / ((1 − s) ln β3 + s ln β_start))``, i.e. ``1/ln f`` interpolates
    linearly between ``1/ln β_start`` and ``1/ln β3`` (a linear ramp of the EMA's time
    constant); written that way it also holds for ``β_start = 0``.
    """
    inv = (1 - s) / jnp.log(b_start) + s / jnp.log(b3)
    return 1 / inv


@transform
class scale_by_ademamix(GradientTransformation):
    """AdEMAMix's scaling: Adam's with a slow EMA ``m2`` added to the numerator.

    With ``t`` the step (1 at the first update), Algorithm 1 of the paper, lines 8–12:

    .. math::
        m_1 ← β_1 m_1 + (1-β_1) g,\\quad m_2 ← β_3 m_2 + (1-β_3) g,\\quad
        ν ← β_2 ν + (1-β_2) |g|^2,\\\\
        u = \\frac{m_1/(1-β_1^t) + α\\, m_2}{\\sqrt{ν/(1-β_2^t) + ε_{root}} + ε}.

    The slow EMA is not bias-corrected (it fills up over ``1/(1 − β3)`` steps; the paper warms
    ``α`` and ``β3`` up instead). ``b3`` and ``alpha`` may be schedules, called, as optax calls
    them, with the number of steps taken before this one (``count_m2``: 0 at the first update).

    The paper's warmups (Algorithm 1, line 5; its schedulers ``f_α`` and ``f_β3``) are built in:
    ``alpha_warmup=T`` uses ``α_t = min(t α / T, α)`` and ``b3_warmup=T`` uses
    ``β3_t = min(exp(ln β1 ln β3 / ((1 − s) ln β3 + s ln β1)), β3)`` with ``s = min(t/T, 1)``
    (``β_start = β1``, the paper's choice), both at the paper's step ``t = count_m2 + 1``. The
    paper sets both to the run's length. They apply on top of a scheduled value. optax has no
    such arguments; without them the numbers are optax.contrib's.

    ``ν`` is kept in the params' real dtype (optax keeps it in ``mu_dtype`` too), and
    saturates at the largest finite value of its dtype instead of overflowing.

    Args:
        b1: decay of the fast EMA, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        b3: decay of the slow EMA, in [0, 1) (or a schedule).
        alpha: weight of the slow EMA (or a schedule).
        eps: added to the denominator outside the square root.
        eps_root: added inside the square root.
        mu_dtype: dtype of ``m1`` and ``m2``.
        alpha_warmup: steps of the paper's linear warmup of ``alpha`` (``None``: none).
        b3_warmup: steps of the paper's warmup of ``b3`` from ``b1`` (``None``: none).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_ademamix(alpha=5.0)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)  # (1 + 5 (1 − 0.9999)) · 2 / 2
        1.0005

    Reference: Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
    arXiv 2409.03137 (ICLR 2025), Algorithm 1.
    """

    flat_safe = True  # element by element: runs on gradtx.flat's buffers
    b1: Any = 0.9
    b2: Any = 0.999
    b3: ScalarOrSchedule = 0.9999
    alpha: ScalarOrSchedule = 6.0
    eps: Any = 1e-8
    eps_root: Any = 0.0
    mu_dtype: Any = static_field(None)
    alpha_warmup: Any = dataclasses.field(default=None, kw_only=True)
    b3_warmup: Any = dataclasses.field(default=None, kw_only=True)

    def _check(self):
        owner = "scale_by_ademamix"
        check_decay(owner, "b1", self.b1)
        check_decay(owner, "b2", self.b2)
        check_decay(owner, "b3", self.b3)
        check_range(owner, "alpha", self.alpha)
        check_nonnegative(owner, "eps", self.eps)
        check_nonnegative(owner, "eps_root", self.eps_root)
        object.__setattr__(self, "mu_dtype", check_dtype(owner, "mu_dtype", self.mu_dtype))
        for name in ("alpha_warmup", "b3_warmup"):
            value = getattr(self, name)
            if value is not None:
                check_count(owner, name, value, low=1)
                if concrete_float(value) is not None:
                    object.__setattr__(self, name, int(concrete_float(value)))

    def init(self, params):
        return ScaleByAdemamixState(
            count=jnp.zeros([], jnp.int32),
            count_m2=jnp.zeros([], jnp.int32),
            m1=tree_lib.tree_zeros_like(params, self.mu_dtype),
            m2=tree_lib.tree_zeros_like(params, self.mu_dtype),
            nu=_nu_init(params, None),
        )

    def _slow(self, count_m2: jax.Array) -> tuple[Any, Any, Any]:
        """``(β3, 1 − β3, α)`` at this step, warmups included."""
        fdt = _float_dtype()
        b3 = hyper(self.b3, count_m2)
        alpha = hyper(self.alpha, count_m2)
        t = count_m2.astype(fdt) + 1  # the paper's step: t ← t + 1 comes first (line 4)
        if self.alpha_warmup is not None:
            alpha = jnp.minimum(t * alpha / self.alpha_warmup, alpha)
        if self.b3_warmup is None:
            return b3, 1 - b3, alpha
        b3 = jnp.asarray(b3, fdt)
        s = jnp.minimum(t / self.b3_warmup, 1.0)
        log_b3 = jnp.minimum(_b3_warmup_log(jnp.asarray(self.b1, fdt), b3, s), jnp.log(b3))
        return jnp.exp(log_b3), -jnp.expm1(log_b3), alpha  # 1 − β3 without cancellation

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.m1, "scale_by_ademamix", "updates", "state (m1)")
        b3, one_minus_b3, alpha = self._slow(state.count_m2)
        count = tree_lib.safe_increment(state.count)
        b1, b2 = self.b1, self.b2
        k = {
            "b1": Scalar(b1),
            "1-b1": Scalar(1 - b1),
            "b2": Scalar(b2),
            "1-b2": Scalar(1 - b2),
            "b3": Scalar(b3),
            "1-b3": Scalar(one_minus_b3),
            "m1": Scalar(1 / tree_lib.bias_correction_scalar(b1, count)),
            "nu": Scalar(1 / tree_lib.bias_correction_scalar(b2, count)),
            "alpha": Scalar(alpha),
            "eps": Scalar(self.eps),
            "eps_root": Scalar(self.eps_root),
        }

        def leaf(g, m1, m2, v):
            if g is None:
                return None, None, None, None
            g = tree_lib.as_array(g)
            m1 = tree_lib.ema_leaf(g, m1, k["b1"], k["1-b1"])
            m2 = tree_lib.ema_leaf(g, m2, k["b3"], k["1-b3"])
            v = _saturate(tree_lib.ema_leaf(tree_lib.abs_sq(g), v, k["b2"], k["1-b2"]))
            cd = tree_lib.compute_dtype(m1.dtype)
            num = lax.add(
                tree_lib.smul(tree_lib.cast(m1, cd), k["m1"]),
                tree_lib.smul(tree_lib.cast(m2, cd), k["alpha"]),
            )
            vd = tree_lib.cast(v, tree_lib.compute_dtype(v.dtype))
            vd = lax.add(tree_lib.smul(vd, k["nu"]), k["eps_root"](vd.dtype))
            den = lax.add(lax.sqrt(vd), k["eps"](vd.dtype))
            return tree_lib.cast(lax.div(num, tree_lib.cast(den, cd)), g.dtype), m1, m2, v

        out, m1, m2, nu = _unzip4(_map(leaf, updates, state.m1, state.m2, state.nu), updates)
        return out, ScaleByAdemamixState(
            count=count, count_m2=tree_lib.safe_increment(state.count_m2), m1=m1, m2=m2, nu=nu
        )


@user_facing
def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    weight_decay: Any = 0.0,
    mask: Any = None,
    *,
    alpha_warmup: int | None = None,
    b3_warmup: int | None = None,
) -> chain:
    """AdEMAMix: :class:`scale_by_ademamix`, decoupled :class:`add_decayed_weights`, then ``−η``:
    ``θ ← θ − η ((m̂1 + α m2) / (√v̂ + ε) + λ θ)`` (Algorithm 1, line 12).

    ``alpha_warmup`` and ``b3_warmup`` switch on the paper's schedulers (see
    :class:`scale_by_ademamix`); the paper sets both to the number of training steps, and
    recommends smaller ``b3`` (0.999) for short runs. Without them the numbers are optax's.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.ademamix(1e-2, alpha_warmup=1000, b3_warmup=1000)
        >>> params = {"w": jnp.ones(2)}
        >>> u, state = opt.update({"w": jnp.ones(2)}, opt.init(params), params)
        >>> [round(float(x), 4) for x in u["w"]]  # α_1 = 5/1000, β3_1 ≈ β1
        [-0.01, -0.01]

    Reference: Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
    arXiv 2409.03137 (ICLR 2025).
    """
    return chain(
        scale_by_ademamix(
            b1,
            b2,
            b3,
            alpha,
            eps,
            eps_root,
            mu_dtype,
            alpha_warmup=alpha_warmup,
            b3_warmup=b3_warmup,
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------------------------
# Simplified AdEMAMix.


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """Step count ``t``, the momentum sum ``m`` and the EMA ``n`` of ``|g|²`` (optax's names)."""

    t: jax.Array
    m: Any
    n: Any


@transform
class scale_by_simplified_ademamix(GradientTransformation):
    """Simplified AdEMAMix's scaling: one momentum, kept as a sum, plus ``α g``.

    .. math::
        m ← β_1 m + g,\\quad n ← β_2 n + (1-β_2) |g|^2,\\quad
        u = \\frac{m + α\\, g}{\\sqrt{n/(1-β_2^t) + ε_{root}} + ε}.

    ``m`` is not an average (no ``1 − β1`` factor) and not bias-corrected: it weighs past
    gradients like AdEMAMix's slow EMA scaled by ``1/(1 − β1)``, and ``α g`` plays the fast
    EMA's part. With ``α = 0`` this is Adam without the first bias correction and with the
    learning rate multiplied by ``1/(1 − β1)``. ``alpha`` may be a schedule (called with the
    number of steps taken before this one). This is the authors' default form (their
    ``bias_correction1=False, bias_correction2=True``) and optax.contrib's; the authors' optional
    warmup of ``β1`` is not included (optax has none either).

    ``n`` is real for complex parameters (``|g|²``; optax forms ``g·g``) and saturates at the
    largest finite value of its dtype.

    Args:
        b1: decay of the momentum sum, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        alpha: weight of the current gradient (or a schedule).
        eps: added to the denominator outside the square root.
        eps_root: added inside the square root.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_simplified_ademamix(alpha=2.0)
        >>> u, _ = tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)  # (m + α g) / |g| = (1 + 2) · (−1)
        -3.0

    Reference: Morwani, Vyas, Zhang & Kakade, "Connections between Schedule-Free Optimizers,
    AdEMAMix, and Accelerated SGD Variants", arXiv 2502.02431 (Simplified-AdEMAMix, Section 5;
    the authors' code at github.com/DepenM/Simplified-AdEMAMix).
    """

    flat_safe = True  # element by element: runs on gradtx.flat's buffers
    b1: Any = 0.99
    b2: Any = 0.95
    alpha: ScalarOrSchedule = 0.0
    eps: Any = 1e-8
    eps_root: Any = 0.0

    def _check(self):
        owner = "scale_by_simplified_ademamix"
        check_decay(owner, "b1", self.b1)
        check_decay(owner, "b2", self.b2)
        check_range(owner, "alpha", self.alpha)
        check_nonnegative(owner, "eps", self.eps)
        check_nonnegative(owner, "eps_root", self.eps_root)

    def _hyperparam_entries(self, state: Any) -> Any:
        # for gradtx.hyperparams: the step count is ``t`` (optax's name), not ``count``
        t = getattr(state, "t", None)
        for name in ("b1", "b2", "alpha", "eps", "eps_root"):
            yield name, getattr(self, name), t, False

    def init(self, params):
        return ScaleBySimplifiedAdEMAMixState(
            t=jnp.zeros([], jnp.int32), m=tree_lib.tree_zeros_like(params), n=_nu_init(params, None)
        )

    def update(self, updates, state, params=None, **extra_args):
        owner = "scale_by_simplified_ademamix"
        tree_lib.check_structure(updates, state.m, owner, "updates", "state (m)")
        alpha = hyper(self.alpha, state.t)
        t = tree_lib.safe_increment(state.t)
        k = {
            "b1": Scalar(self.b1),
            "b2": Scalar(self.b2),
            "1-b2": Scalar(1 - self.b2),
            "n": Scalar(1 / tree_lib.bias_correction_scalar(self.b2, t)),
            "alpha": Scalar(alpha),
            "eps": Scalar(self.eps),
            "eps_root": Scalar(self.eps_root),
        }

        def leaf(g, m, n):
            if g is None:
                return None, None, None
            g = tree_lib.as_array(g)
            m = tree_lib.as_array(m)
            cd = tree_lib.compute_dtype(m.dtype)
            gc = tree_lib.cast(g, cd)
            mc = lax.add(tree_lib.smul(tree_lib.cast(m, cd), k["b1"]), gc)
            n = _saturate(tree_lib.ema_leaf(tree_lib.abs_sq(g), n, k["b2"], k["1-b2"]))
            num = lax.add(mc, tree_lib.smul(gc, k["alpha"]))
            nd = tree_lib.cast(n, tree_lib.compute_dtype(n.dtype))
            nd = lax.add(tree_lib.smul(nd, k["n"]), k["eps_root"](nd.dtype))
            den = lax.add(lax.sqrt(nd), k["eps"](nd.dtype))
            out = tree_lib.cast(lax.div(num, tree_lib.cast(den, cd)), g.dtype)
            return out, tree_lib.cast(mc, m.dtype), n

        out, m, n = _unzip3(_map(leaf, updates, state.m, state.n), updates)
        return out, ScaleBySimplifiedAdEMAMixState(t=t, m=m, n=n)


@user_facing
def simplified_ademamix(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.99,
    b2: Any = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    weight_decay: Any = 0.0,
    mask: Any = None,
) -> chain:
    """Simplified AdEMAMix: :class:`scale_by_simplified_ademamix`, decoupled
    :class:`add_decayed_weights`, then ``−η``: ``θ ← θ − η ((m + α g) / (√n̂ + ε) + λ θ)``.

    The authors tune ``η`` about ``sqrt((1 − β_adam)(1 − β1))`` times Adam's (``m`` is a sum),
    and ``α`` from about 0 at large batch sizes to about 100 at small ones.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.simplified_ademamix(1e-2, alpha=1.0)
        >>> params = {"w": jnp.ones(2)}
        >>> u, state = opt.update({"w": jnp.ones(2)}, opt.init(params), params)
        >>> [round(float(x), 4) for x in u["w"]]
        [-0.02, -0.02]

    Reference: Morwani, Vyas, Zhang & Kakade, arXiv 2502.02431.
    """
    return chain(
        scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------------------------
# ADOPT.


def _quarter_power(count: jax.Array) -> jax.Array:
    """ADOPT's clipping bound ``c_t = t^{1/4}``."""
    return jnp.asarray(count) ** 0.25


def _clip_leaf(x: jax.Array, c: jax.Array) -> jax.Array:
    """``clip(x, −c, c)``; for complex ``x`` the magnitude is clipped and the phase kept."""
    if jnp.iscomplexobj(x):
        mag = jnp.abs(x)
        c = c.astype(mag.dtype)
        return x * jnp.where(mag > c, c / jnp.where(mag > c, mag, 1), 1).astype(mag.dtype)
    c = c.astype(x.dtype)
    return jnp.clip(x, -c, c)


@transform
class scale_by_adopt(GradientTransformation):
    """ADOPT's scaling: normalise by the previous second moment, clip, then average.

    The first update only records ``v_0 = |g_0|²`` and returns zeros (the paper's
    initialisation ``v_0 ← g_0 ⊙ g_0``, ``m_0 = 0``). From the second on, with ``t`` the number
    of updates before this one (Algorithm 2, lines 4–6; Algorithm 1 without the clip):

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1)\\,\\mathrm{clip}\\Big(\\frac{g_t}{\\max(\\sqrt{v_{t-1}}, ε)},
        c_t\\Big),\\quad u = m_t,\\quad v_t = β_2 v_{t-1} + (1-β_2) |g_t|^2,

    with ``c_t = clip_value_fn(t)`` (``t^{1/4}`` by default). ``v`` never contains the gradient
    it divides, which is what makes ADOPT converge for any ``β2``. There is no bias correction.
    With ``nesterov=True`` the output is ``β1 m_t + (1 − β1) ĝ_t`` (optax's option; not in the
    paper). Complex gradients are clipped in magnitude, keeping their phase.

    ``v`` is kept in the params' real dtype and saturates at the largest finite value of its
    dtype instead of overflowing.

    Args:
        b1: decay of the momentum, in [0, 1).
        b2: decay of the second moment, in [0, 1].
        eps: lower bound of the denominator ``max(√v, ε)``.
        mu_dtype: dtype of ``mu``.
        nesterov: return the look-ahead momentum.
        use_clipping: clip the normalised gradient (Algorithm 2); ``False`` is Algorithm 1.
        clip_value_fn: the bound ``c_t`` as a function of ``t`` (a schedule).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_adopt()
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([2.0]), state)  # records v_0 = 4
        >>> float(u[0])
        0.0
        >>> u, state = tx.update(jnp.array([4.0]), state)  # (1 − 0.9) · clip(4 / 2, 1)
        >>> round(float(u[0]), 4)
        0.1

    Reference: Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any β2 with the Optimal
    Rate", NeurIPS 2024, arXiv 2411.02853, Algorithms 1 and 2.
    """

    flat_safe = True  # element by element: runs on gradtx.flat's buffers
    b1: Any = 0.9
    b2: Any = 0.9999
    eps: Any = 1e-6
    mu_dtype: Any = static_field(None)
    nesterov: bool = static_field(False, kw_only=True)
    use_clipping: bool = static_field(True, kw_only=True)
    clip_value_fn: Any = dataclasses.field(default=_StaticFn(_quarter_power), kw_only=True)

    def _check(self):
        owner = "scale_by_adopt"
        check_decay(owner, "b1", self.b1)
        check_range(owner, "b2", self.b2, low=0.0, high=1.0)
        check_nonnegative(owner, "eps", self.eps)
        object.__setattr__(self, "mu_dtype", check_dtype(owner, "mu_dtype", self.mu_dtype))
        if not callable(self.clip_value_fn):
            raise TypeError(
                f"{owner}: clip_value_fn must be a function of the step count, "
                f"got {self.clip_value_fn!r}"
            )

    def init(self, params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_lib.tree_zeros_like(params, self.mu_dtype),
            nu=_nu_init(params, None),
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_adopt", "updates", "state (mu)")
        first = state.count == 0  # the initialisation step: v_0 = |g_0|², no move
        b1 = jnp.where(first, 1.0, self.b1)
        b2 = jnp.where(first, 0.0, self.b2)
        clip = jnp.asarray(self.clip_value_fn(state.count)) if self.use_clipping else None
        k = {
            "b1": Scalar(b1),
            "1-b1": Scalar(1 - b1),
            "b2": Scalar(b2),
            "1-b2": Scalar(1 - b2),
            "eps": Scalar(self.eps),
        }

        def leaf(g, m, v):
            if g is None:
                return None, None, None
            g = tree_lib.as_array(g)
            m = tree_lib.as_array(m)
            cd = tree_lib.compute_dtype(jnp.promote_types(g.dtype, m.dtype))
            rd = tree_lib.real_dtype(cd)
            den = jnp.maximum(lax.sqrt(tree_lib.cast(v, rd)), k["eps"](rd))
            gh = lax.div(tree_lib.cast(g, cd), tree_lib.cast(den, cd))
            if clip is not None:
                gh = _clip_leaf(gh, clip)
            gh = jnp.where(first, jnp.zeros((), cd), gh)  # g_0 / ε may overflow: never used
            mc = lax.add(tree_lib.smul(tree_lib.cast(m, cd), k["b1"]), tree_lib.smul(gh, k["1-b1"]))
            out = mc
            if self.nesterov:
                out = lax.add(tree_lib.smul(mc, k["b1"]), tree_lib.smul(gh, k["1-b1"]))
            v = _saturate(tree_lib.ema_leaf(tree_lib.abs_sq(g), v, k["b2"], k["1-b2"]))
            return tree_lib.cast(out, g.dtype), tree_lib.cast(mc, m.dtype), v

        out, mu, nu = _unzip3(_map(leaf, updates, state.mu, state.nu), updates)
        return out, ScaleByAdamState(count=tree_lib.safe_increment(state.count), mu=mu, nu=nu)


@user_facing
def adopt(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.9999,
    eps: Any = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Any = _quarter_power,
) -> chain:
    """ADOPT: :class:`scale_by_adopt` then ``−α``: ``θ_t ← θ_{t−1} − α_t m_t`` (Algorithm 2,
    line 5). The first update only initialises ``v`` and leaves the parameters where they are.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.adopt(0.1)
        >>> params = {"w": jnp.ones(2)}
        >>> state = opt.init(params)
        >>> for g in (1.0, 3.0):
        ...     u, state = opt.update({"w": jnp.full(2, g)}, state, params)
        >>> [round(float(x), 4) for x in u["w"]]  # −0.1 · (1 − 0.9) · clip(3 / 1, 1)
        [-0.01, -0.01]

    Reference: Taniguchi et al., NeurIPS 2024, arXiv 2411.02853.
    """
    return chain(
        scale_by_adopt(
            b1,
            b2,
            eps,
            mu_dtype,
            nesterov=nesterov,
            use_clipping=use_clipping,
            clip_value_fn=clip_value_fn,
        ),
        scale_by_learning_rate(learning_rate),
    )
