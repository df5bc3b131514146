"""Adam's relatives: RAdam, AdaBelief, Yogi, Adan, NovoGrad and Lion.

Each follows its paper's algorithm box by default. Where optax computes something else, a
documented argument selects optax's numbers (the README's "What differs from optax" lists them).
Divisions are carried out in at least float32 (:func:`gradtx.numerics.compute_dtype`) and cast
back, so zero gradients in float16/bfloat16 give zero updates, not NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    CountState,
    EmptyState,
    GradientTransformation,
    broadcast_mask,
    check_decay,
    check_dtype,
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
from gradtx.safe_math import _saturate, _saturate_tree
from gradtx.transforms.adaptive import ScaleByAdamState, _adam_state, _normalise, _nu_init

__all__ = [
    "scale_by_radam",
    "scale_by_belief",
    "scale_by_yogi",
    "scale_by_adan",
    "scale_by_novograd",
    "scale_by_lion",
    "add_proximal_decay",
    "ScaleByBeliefState",
    "ScaleByAdanState",
    "ScaleByNovogradState",
    "ScaleByLionState",
]


def _nesterov_mu_hat(mu: Any, updates: Any, b1: Any, count: jax.Array) -> Any:
    """Nadam's look-ahead numerator ``β1 m_t / (1 − β1^(t+1)) + (1 − β1) g_t / (1 − β1^t)``."""
    mu_next = tree_lib.bias_correction(mu, b1, tree_lib.safe_increment(count))
    g_hat = tree_lib.bias_correction(updates, b1, count)
    return _map(lambda m, g: None if m is None else b1 * m + (1 - b1) * g, mu_next, g_hat)


def _cast_like(tree: Any, like: Any) -> Any:
    return _map(lambda x, g: None if g is None else x.astype(g.dtype), tree, like)


# ----------------------------------------------------------------------------------------------
# RAdam.


@transform
class scale_by_radam(GradientTransformation):
    """Rectified Adam's scaling (Liu et al., 2020, Algorithm 2).

    With ``ρ∞ = 2 / (1 − β2) − 1`` and ``ρ_t = ρ∞ − 2 t β2^t / (1 − β2^t)``:

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1) g_t,\\quad v_t = β_2 v_{t-1} + (1-β_2) |g_t|^2,\\quad
        \\hat m_t = m_t / (1-β_1^t),\\\\
        r_t = \\sqrt{\\frac{(ρ_t-4)(ρ_t-2)ρ_∞}{(ρ_∞-4)(ρ_∞-2)ρ_t}},\\quad
        u_t = r_t \\hat m_t / (\\sqrt{\\hat v_t + ε_{root}} + ε)\\ \\text{if}\\ ρ_t > τ,
        \\ \\text{else}\\ u_t = \\hat m_t.

    The paper's box switches at ``ρ_t > 4``; the default ``threshold τ = 5`` is the authors'
    released code and optax's (pass ``threshold=4.0`` for the box; ``ρ_t`` is never exactly
    5, so ``>`` and optax's ``>=`` agree). The box has no ``ε``; ``eps=0`` gives it exactly.

    ``ν`` saturates at the largest finite value of its dtype, as in :class:`scale_by_adam`.

    Args:
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the denominator outside the square root.
        eps_root: added inside the square root.
        threshold: the rectification switches on once ``ρ_t`` exceeds it.
        nesterov: use the Nadam numerator (see :class:`gradtx.scale_by_adam`).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_radam()
        >>> u, _ = tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))
        >>> [round(float(x), 4) for x in u]  # ρ_1 = 1: the first steps are plain momentum
        [0.5, -2.0]

    Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
    ICLR 2020.
    """

    b1: Any = 0.9
    b2: Any = 0.999
    eps: Any = 1e-8
    eps_root: Any = 0.0
    threshold: Any = 5.0
    nesterov: bool = static_field(False, kw_only=True)

    def _check(self):
        check_decay("scale_by_radam", "b1", self.b1)
        check_decay("scale_by_radam", "b2", self.b2)
        check_nonnegative("scale_by_radam", "eps", self.eps)
        check_nonnegative("scale_by_radam", "eps_root", self.eps_root)
        check_nonnegative("scale_by_radam", "threshold", self.threshold)

    def init(self, params):
        return _adam_state(params)

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_radam", "updates", "state (mu)")
        b1, b2 = hyper(self.b1, state.count), hyper(self.b2, state.count)
        mu = tree_lib.update_moment(updates, state.mu, b1, 1)
        nu = _saturate_tree(tree_lib.update_moment_per_elem_norm(updates, state.nu, b2, 2))
        count = tree_lib.safe_increment(state.count)
        # The paper's formula as written: with a Python-float b2, ρ∞ is exact and β2^t is an
        # integer power, the same arithmetic as optax (ρ_t cancels badly in float32 either way).
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        b2t = b2**count
        rho = rho_inf - 2 * count * b2t / (1 - b2t)
        # Clamped so the untaken branch never produces NaN (or NaN gradients).
        ratio = jnp.maximum((rho - 4.0) * (rho - 2.0), 0.0) * rho_inf
        ratio = ratio / ((rho_inf - 4.0) * (rho_inf - 2.0) * jnp.maximum(rho, 1e-30))
        r = jnp.sqrt(ratio)
        if self.nesterov:
            mu_hat = _nesterov_mu_hat(mu, updates, b1, count)
        else:
            mu_hat = tree_lib.bias_correction(mu, b1, count)
        nu_hat = tree_lib.bias_correction(nu, b2, count)
        adaptive = _normalise(mu_hat, nu_hat, updates, eps=self.eps, eps_root=self.eps_root)
        on = rho > self.threshold
        out = _map(
            lambda a, m, g: (
                None if g is None else jnp.where(on, r * a, m.astype(a.dtype)).astype(g.dtype)
            ),
            adaptive,
            mu_hat,
            updates,
        )
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)


# ----------------------------------------------------------------------------------------------
# AdaBelief.


class ScaleByBeliefState(NamedTuple):
    """Step count, EMA of gradients ``mu`` and EMA of the squared prediction error ``nu``."""

    count: jax.Array
    mu: Any
    nu: Any


@transform
class scale_by_belief(GradientTransformation):
    """AdaBelief's scaling: divide by the spread of g around its EMA (Zhuang et al., 2020,
    Algorithm 2).

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1) g_t,\\quad
        s_t = β_2 s_{t-1} + (1-β_2) |g_t - m_t|^2 + ε_{root},\\\\
        u_t = \\frac{m_t / (1-β_1^t)}{\\sqrt{s_t / (1-β_2^t)} + ε}.

    ``ε_root`` is the box's ``ε`` added to ``s_t`` (and kept in the state, as in the paper).

    ``s`` saturates at the largest finite value of its dtype (``|g − m| ≳ 1.8e19`` in float32),
    as ``ν`` does in :class:`scale_by_adam`.

    Args:
        b1: decay of the first moment, in [0, 1).
        b2: decay of the belief (second central) moment, in [0, 1).
        eps: added to the denominator outside the square root.
        eps_root: added to ``s_t`` at every step.
        nesterov: use the Nadam numerator (see :class:`gradtx.scale_by_adam`).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_belief()
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)  # m̂ = 2, ŝ = (1.8)^2: 2 / 1.8
        1.1111

    Reference: Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
    Gradients", NeurIPS 2020.
    """

    b1: Any = 0.9
    b2: Any = 0.999
    eps: Any = 1e-16
    eps_root: Any = 1e-16
    nesterov: bool = static_field(False, kw_only=True)

    def _check(self):
        check_decay("scale_by_belief", "b1", self.b1)
        check_decay("scale_by_belief", "b2", self.b2)
        check_nonnegative("scale_by_belief", "eps", self.eps)
        check_nonnegative("scale_by_belief", "eps_root", self.eps_root)

    def init(self, params):
        return ScaleByBeliefState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_lib.tree_zeros_like(params),
            nu=_nu_init(params, None),
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_belief", "updates", "state (mu)")
        b1, b2 = hyper(self.b1, state.count), hyper(self.b2, state.count)
        mu = tree_lib.update_moment(updates, state.mu, b1, 1)
        err = _map(lambda g, m: None if g is None else g.astype(m.dtype) - m, updates, mu)
        nu = tree_lib.update_moment_per_elem_norm(err, state.nu, b2, 2)
        nu = _map(
            lambda n: None if n is None else _saturate((n + self.eps_root).astype(n.dtype)), nu
        )
        count = tree_lib.safe_increment(state.count)
        if self.nesterov:
            mu_hat = _nesterov_mu_hat(mu, updates, b1, count)
        else:
            mu_hat = tree_lib.bias_correction(mu, b1, count)
        nu_hat = tree_lib.bias_correction(nu, b2, count)
        out = _normalise(mu_hat, nu_hat, updates, eps=self.eps)
        return out, ScaleByBeliefState(count=count, mu=mu, nu=nu)


# ----------------------------------------------------------------------------------------------
# Yogi.


@transform
class scale_by_yogi(GradientTransformation):
    """Yogi's scaling: an additive, sign-controlled second moment (Zaheer et al., 2018,
    Algorithm 2).

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1) g_t,\\quad
        v_t = v_{t-1} - (1-β_2)\\,\\mathrm{sign}(v_{t-1} - |g_t|^2)\\,|g_t|^2,\\quad
        u_t = m_t / (\\sqrt{v_t + ε_{root}} + ε),

    with ``m_0 = 0`` and ``v_0 = initial_accumulator_value`` (the paper's experiments start
    ``v`` at 1e-6). The box has no bias correction. optax (like TF-Addons) divides ``m`` and
    ``v`` by ``1 − β^t`` and starts ``m`` at ``initial_accumulator_value`` too: pass
    ``bias_correction=True`` for those numbers.

    ``|g|²`` and ``v`` saturate at the largest finite value of their dtype, so the sign test
    never meets ``inf − inf`` (``|g| ≳ 1.8e19`` in float32 no longer gives NaN).

    Args:
        b1: decay of the first moment, in [0, 1).
        b2: the second moment's rate, in [0, 1).
        eps: added to the denominator outside the square root (the paper uses 1e-3).
        eps_root: added inside the square root.
        initial_accumulator_value: ``v_0`` (and ``m_0`` with ``bias_correction``), >= 0.
        bias_correction: optax's form (see above).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_yogi(eps=0.0, initial_accumulator_value=0.0)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)  # m = 0.2, v = 0.004: 0.2 / sqrt(0.004)
        3.1623

    Reference: Zaheer, Reddi, Sachan, Kale & Kumar, "Adaptive Methods for Nonconvex
    Optimization", NeurIPS 2018.
    """

    b1: Any = 0.9
    b2: Any = 0.999
    eps: Any = 1e-3
    eps_root: Any = 0.0
    initial_accumulator_value: Any = 1e-6
    bias_correction: bool = static_field(False, kw_only=True)

    def _check(self):
        check_decay("scale_by_yogi", "b1", self.b1)
        check_decay("scale_by_yogi", "b2", self.b2)
        check_nonnegative("scale_by_yogi", "eps", self.eps)
        check_nonnegative("scale_by_yogi", "eps_root", self.eps_root)
        check_nonnegative(
            "scale_by_yogi", "initial_accumulator_value", self.initial_accumulator_value
        )

    def init(self, params):
        v0 = self.initial_accumulator_value
        mu = (
            tree_lib.tree_full_like(params, v0)
            if self.bias_correction
            else tree_lib.tree_zeros_like(params)
        )
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32), mu=mu, nu=_nu_init(params, None, v0)
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_yogi", "updates", "state (mu)")
        b1, b2 = hyper(self.b1, state.count), hyper(self.b2, state.count)
        mu = tree_lib.update_moment(updates, state.mu, b1, 1)

        def second(g, v):
            if g is None:
                return None
            cd = tree_lib.compute_dtype(v.dtype)
            # |g|² capped, and v finite (saturated): sign(v − g²) never meets inf − inf
            g2 = _saturate(tree_lib.abs_sq(g).astype(cd))
            vc = v.astype(cd)
            return _saturate((vc - (1 - b2) * jnp.sign(vc - g2) * g2).astype(v.dtype))

        nu = _map(second, updates, state.nu)
        count = tree_lib.safe_increment(state.count)
        if self.bias_correction:
            mu_hat = tree_lib.bias_correction(mu, b1, count)
            nu_hat = tree_lib.bias_correction(nu, b2, count)
        else:
            mu_hat, nu_hat = mu, nu
        out = _normalise(mu_hat, nu_hat, updates, eps=self.eps, eps_root=self.eps_root)
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)


# ----------------------------------------------------------------------------------------------
# Adan.


class ScaleByAdanState(NamedTuple):
    """Step count; EMAs of gradients ``m``, of gradient differences ``v`` and of the squared
    Nesterov gradient ``n``; and the previous gradient ``prev_grad``."""

    count: jax.Array
    m: Any
    v: Any
    n: Any
    prev_grad: Any


_ADAN_VARIANTS = ("paper", "optax")


@transform
class scale_by_adan(GradientTransformation):
    """Adan's scaling: Adam with a Nesterov momentum estimate (Xie et al., 2022, Algorithm 1).

    Written with decays ``b = 1 − β_paper`` (so ``b1 = 0.98`` is the paper's ``β1 = 0.02``) and
    ``Δ_k = g_k − g_{k−1}``:

    .. math::
        m_k = b_1 m_{k-1} + (1-b_1) g_k,\\quad v_k = b_2 v_{k-1} + (1-b_2) Δ_k,\\\\
        n_k = b_3 n_{k-1} + (1-b_3) |g_k + b_2 Δ_k|^2,\\quad
        u_k = (m_k + b_2 v_k) / (\\sqrt{n_k + ε_{root}} + ε).

    ``variant="paper"`` (default) initialises as the box does: ``m_0 = g_0``, ``n_0 = |g_0|^2``,
    ``v_0 = 0`` and ``v_1 = g_1 − g_0``, with no bias correction.
    The box writes the step size as ``η / √(n_k + ε)``: ``eps=0, eps_root=ε`` gives it exactly
    (:func:`gradtx.adan` defaults to optax's ``eps = eps_root = 1e-8``).

    ``variant="optax"`` gives optax's numbers: all moments start at 0 and are divided by
    ``1 − b^k`` (as the authors' code does, with ``Δ_1 = 0``), and the difference is weighted by
    ``1 − b_2`` instead of ``b_2`` (``g + (1 − b2) Δ`` and ``m̂ + (1 − b2) v̂``), which is the
    paper's ``β2`` where the paper has ``1 − β2``.

    ``n`` saturates at the largest finite value of its dtype, as ``ν`` does in
    :class:`scale_by_adam`.

    Args:
        b1: decay of the gradient EMA, in [0, 1).
        b2: decay of the gradient-difference EMA, in [0, 1).
        b3: decay of the squared-term EMA, in [0, 1).
        eps: added to the denominator outside the square root.
        eps_root: added inside the square root.
        variant: ``"paper"`` or ``"optax"``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_adan(eps=0.0)
        >>> u, _ = tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)  # m_0 = g_0, n_0 = g_0^2: a unit first step
        -1.0

    Reference: Xie, Zhou, Li, Lin & Yan, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models", arXiv:2208.06677 (TPAMI 2024).
    """

    b1: Any = 0.98
    b2: Any = 0.92
    b3: Any = 0.99
    eps: Any = 1e-8
    eps_root: Any = 0.0
    variant: str = static_field("paper", kw_only=True)

    def _check(self):
        for name in ("b1", "b2", "b3"):
            check_decay("scale_by_adan", name, getattr(self, name))
        check_nonnegative("scale_by_adan", "eps", self.eps)
        check_nonnegative("scale_by_adan", "eps_root", self.eps_root)
        if self.variant not in _ADAN_VARIANTS:
            raise ValueError(
                f"scale_by_adan: variant must be one of {_ADAN_VARIANTS}, got {self.variant!r}"
            )

    def init(self, params):
        zeros = tree_lib.tree_zeros_like(params)
        return ScaleByAdanState(
            count=jnp.zeros([], jnp.int32),
            m=zeros,
            v=zeros,
            n=_nu_init(params, None),
            prev_grad=zeros,
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.m, "scale_by_adan", "updates", "state (m)")
        c = state.count
        b1, b2, b3 = (hyper(b, c) for b in (self.b1, self.b2, self.b3))
        paper = self.variant == "paper"
        w = b2 if paper else 1 - b2  # weight of the gradient difference
        first, second = c == 0, c == 1

        diff = _map(
            lambda g, gp: (
                None if g is None else jnp.where(first, jnp.zeros_like(g), g - gp.astype(g.dtype))
            ),
            updates,
            state.prev_grad,
        )

        def first_moment(g, m):
            if g is None:
                return None
            new = b1 * m + (1 - b1) * g.astype(m.dtype)
            return (jnp.where(first, g.astype(m.dtype), new) if paper else new).astype(m.dtype)

        def diff_moment(d, v):
            if d is None:
                return None
            d = d.astype(v.dtype)
            new = b2 * v + (1 - b2) * d
            return (jnp.where(second, d, new) if paper else new).astype(v.dtype)

        def second_moment(g, d, n):
            if g is None:
                return None
            cd = tree_lib.compute_dtype(g.dtype)
            nest = tree_lib.abs_sq(g.astype(cd) + w * d.astype(cd))
            new = b3 * n + (1 - b3) * nest.astype(n.dtype)
            if paper:
                new = jnp.where(first, tree_lib.abs_sq(g).astype(n.dtype), new)
            return _saturate(new.astype(n.dtype))

        m = _map(first_moment, updates, state.m)
        v = _map(diff_moment, diff, state.v)
        n = _map(second_moment, updates, diff, state.n)
        count = tree_lib.safe_increment(c)
        if paper:
            m_hat, v_hat, n_hat = m, v, n
        else:
            m_hat = tree_lib.bias_correction(m, b1, count)
            v_hat = tree_lib.bias_correction(v, b2, count)
            n_hat = tree_lib.bias_correction(n, b3, count)
        num = _map(lambda a, b: None if a is None else a + w * b.astype(a.dtype), m_hat, v_hat)
        out = _normalise(num, n_hat, updates, eps=self.eps, eps_root=self.eps_root)
        prev = _cast_like(updates, state.prev_grad)
        return out, ScaleByAdanState(count=count, m=m, v=v, n=n, prev_grad=prev)


@transform
class add_proximal_decay(GradientTransformation):
    """Proximal (implicit) weight decay after the learning rate: ``θ ← (θ + u) / (1 + λ α)``.

    Placed after :class:`gradtx.scale_by_learning_rate` (which produced ``u = −α d``), the
    update becomes ``(u − λ α θ) / (1 + λ α)``: the closed-form proximal step of
    ``λ/2 ‖θ‖²`` that Adan's Algorithm 1 takes, instead of AdamW's explicit ``−α λ θ``.

    Args:
        learning_rate: ``α`` (a float or a schedule of the step count, as given to the
            optimizer).
        weight_decay: ``λ >= 0`` (a float or a schedule).
        mask: which parameters decay (a pytree of bools or a function of the params).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.add_proximal_decay(0.1, 1.0)
        >>> p = jnp.array([1.1])
        >>> u, _ = tx.update(jnp.array([0.0]), tx.init(p), p)
        >>> round(float((p + u)[0]), 4)  # 1.1 / (1 + 0.1)
        1.0

    Reference: Xie et al., "Adan", arXiv:2208.06677, Algorithm 1 line 7.
    """

    learning_rate: Any = None
    weight_decay: Any = 0.0
    mask: Any = static_field(None)

    def _check(self):
        if self.learning_rate is None:
            raise TypeError("add_proximal_decay: learning_rate must be a number or schedule")
        check_range("add_proximal_decay", "learning_rate", self.learning_rate)
        check_nonnegative("add_proximal_decay", "weight_decay", self.weight_decay)
        object.__setattr__(self, "mask", freeze_mask(self.mask))

    def init(self, params):
        if callable(self.learning_rate) or callable(self.weight_decay):
            return CountState(count=jnp.zeros([], jnp.int32))
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("add_proximal_decay: update needs params")
        tree_lib.check_structure(updates, params, "add_proximal_decay", "updates", "params")
        count = state.count if isinstance(state, CountState) else None
        lr, wd = hyper(self.learning_rate, count), hyper(self.weight_decay, count)
        mask = broadcast_mask(resolve_mask(self.mask, params), params, "add_proximal_decay")

        def f(u, p, on):
            if u is None:
                return None
            cd = tree_lib.compute_dtype(u.dtype)
            decayed = (u.astype(cd) - lr * wd * p.astype(cd)) / (1 + lr * wd)
            return jnp.where(on, decayed, u.astype(cd)).astype(u.dtype)

        out = jax.tree_util.tree_map(f, updates, params, mask, is_leaf=_none)
        if count is not None:
            state = CountState(count=tree_lib.safe_increment(count))
        return out, state


# ----------------------------------------------------------------------------------------------
# NovoGrad.


class ScaleByNovogradState(NamedTuple):
    """Step count, first moment ``mu`` (per element) and second moment ``nu`` (one scalar per
    parameter array: the EMA of its squared gradient norm)."""

    count: jax.Array
    mu: Any
    nu: Any


@transform
class scale_by_novograd(GradientTransformation):
    """NovoGrad's scaling: layer-wise second moments (Ginsburg et al., 2019, Algorithm 1).

    For each parameter array ("layer") ``l``:

    .. math::
        v^l_t = β_2 v^l_{t-1} + (1-β_2) \\|g^l_t\\|^2,\\quad
        m^l_t = β_1 m^l_{t-1} + \\Big(\\frac{g^l_t}{\\sqrt{v^l_t + ε_{root}} + ε} + d\\,θ^l_t\\Big),

    with ``v_1 = ‖g_1‖²`` and ``m_1 = g_1 / (√v_1 + ε) + d θ_1``; the output is ``m_t`` (the
    optimizer multiplies it by ``−α``). Note there is no ``1 − β1`` factor. Matches optax.

    Each ``v^l`` saturates at the largest finite value of its dtype (a layer's ``‖g‖ ≳ 1.8e19``
    in float32) instead of overflowing; the normalised gradient is then ``g / 1.8e19``.

    Args:
        b1: momentum of ``m``, in [0, 1).
        b2: decay of the layer-wise second moment, in [0, 1).
        eps: added to the denominator outside the square root.
        eps_root: added inside the square root.
        weight_decay: ``d >= 0``, added to the normalised gradient inside the moment.
        mu_dtype: dtype of ``mu``.
        mask: which parameters the weight decay applies to (``None``: all).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_novograd(eps=0.0)
        >>> p = jnp.zeros(2)
        >>> u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(p), p)
        >>> [round(float(x), 4) for x in u]  # g / ‖g‖
        [0.6, 0.8]

    Reference: Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments
    for Training of Deep Networks", arXiv:1905.11286, 2019.
    """

    b1: Any = 0.9
    b2: Any = 0.25
    eps: Any = 1e-8
    eps_root: Any = 0.0
    weight_decay: Any = 0.0
    mu_dtype: Any = static_field(None)
    mask: Any = static_field(None, kw_only=True)

    def _check(self):
        check_decay("scale_by_novograd", "b1", self.b1)
        check_decay("scale_by_novograd", "b2", self.b2)
        check_nonnegative("scale_by_novograd", "eps", self.eps)
        check_nonnegative("scale_by_novograd", "eps_root", self.eps_root)
        check_nonnegative("scale_by_novograd", "weight_decay", self.weight_decay)
        object.__setattr__(
            self, "mu_dtype", check_dtype("scale_by_novograd", "mu_dtype", self.mu_dtype)
        )
        object.__setattr__(self, "mask", freeze_mask(self.mask))

    def init(self, params):
        nu = _map(
            lambda p: (
                None
                if p is None
                else jnp.zeros([], tree_lib.compute_dtype(tree_lib.real_dtype(jnp.result_type(p))))
            ),
            params,
        )
        return ScaleByNovogradState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_lib.tree_zeros_like(params, self.mu_dtype),
            nu=nu,
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_novograd", "updates", "state (mu)")
        c = state.count
        b1, b2 = hyper(self.b1, c), hyper(self.b2, c)
        wd = hyper(self.weight_decay, c)
        first = c == 0
        if params is None:
            if isinstance(wd, int | float) and wd == 0:
                params = jax.tree_util.tree_map(jnp.zeros_like, updates)
            else:
                raise ValueError("scale_by_novograd: update needs params when weight_decay != 0")
        mask = broadcast_mask(resolve_mask(self.mask, params), params, "scale_by_novograd")

        def second(g, v):
            if g is None:
                return None
            sq = jnp.sum(tree_lib.abs_sq(g.astype(tree_lib.compute_dtype(g.dtype)))).astype(v.dtype)
            return _saturate(jnp.where(first, sq, b2 * v + (1 - b2) * sq).astype(v.dtype))

        def first_moment(g, m, v, p, on):
            if g is None:
                return None
            gc = g.astype(tree_lib.compute_dtype(g.dtype))
            a = gc / (jnp.sqrt(v + self.eps_root) + self.eps)
            a = jnp.where(on, a + wd * p.astype(a.dtype), a)
            return jnp.where(first, a, b1 * m.astype(a.dtype) + a).astype(m.dtype)

        nu = _map(second, updates, state.nu)
        mu = _map(first_moment, updates, state.mu, nu, params, mask)
        count = tree_lib.safe_increment(c)
        return _cast_like(mu, updates), ScaleByNovogradState(count=count, mu=mu, nu=nu)


# ----------------------------------------------------------------------------------------------
# Lion.


class ScaleByLionState(NamedTuple):
    """Step count and the momentum ``mu`` (EMA of gradients with decay β2)."""

    count: jax.Array
    mu: Any


_LION_MODES = ("hard", "smooth", "refined")


@transform
class scale_by_lion(GradientTransformation):
    """Lion's scaling: the sign of an interpolated momentum (Chen et al., 2023, Algorithm 2).

    .. math::
        c_t = β_1 m_{t-1} + (1-β_1) g_t,\\quad u_t = \\mathrm{sign}(c_t),\\quad
        m_t = β_2 m_{t-1} + (1-β_2) g_t.

    ``mode="smooth"`` replaces the sign by ``tanh(smooth_beta · c)``; ``mode="refined"`` keeps
    ``c`` where ``|c| < 1`` and its sign elsewhere (optax's options; the paper uses the sign).

    Args:
        b1: interpolation between momentum and gradient, in [0, 1].
        b2: decay of the momentum, in [0, 1).
        mu_dtype: dtype of ``mu``.
        mode: ``"hard"`` (sign, the paper), ``"smooth"`` or ``"refined"``.
        smooth_beta: slope of the ``tanh`` in ``"smooth"`` mode.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_lion()
        >>> u, _ = tx.update(jnp.array([0.01, -30.0, 0.0]), tx.init(jnp.zeros(3)))
        >>> u.tolist()
        [1.0, -1.0, 0.0]

    Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """

    b1: Any = 0.9
    b2: Any = 0.99
    mu_dtype: Any = static_field(None)
    mode: str = static_field("hard", kw_only=True)
    smooth_beta: Any = dataclasses.field(default=1.0, kw_only=True)

    def _check(self):
        check_range("scale_by_lion", "b1", self.b1, low=0.0, high=1.0)
        check_decay("scale_by_lion", "b2", self.b2)
        check_nonnegative("scale_by_lion", "smooth_beta", self.smooth_beta)
        object.__setattr__(
            self, "mu_dtype", check_dtype("scale_by_lion", "mu_dtype", self.mu_dtype)
        )
        if self.mode not in _LION_MODES:
            raise ValueError(f"scale_by_lion: mode must be one of {_LION_MODES}, got {self.mode!r}")

    def init(self, params):
        return ScaleByLionState(
            count=jnp.zeros([], jnp.int32), mu=tree_lib.tree_zeros_like(params, self.mu_dtype)
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_lion", "updates", "state (mu)")
        b1, b2 = hyper(self.b1, state.count), hyper(self.b2, state.count)

        def direction(g, m):
            if g is None:
                return None
            cd = tree_lib.compute_dtype(g.dtype)
            c = (1 - b1) * g.astype(cd) + b1 * m.astype(cd)
            if self.mode == "hard":
                d = jnp.sign(c)
            elif self.mode == "smooth":
                d = jnp.tanh(self.smooth_beta * c)
            else:
                d = jnp.where(jnp.abs(c) < 1.0, c, jnp.sign(c))
            return d.astype(g.dtype)

        out = _map(direction, updates, state.mu)
        mu = tree_lib.update_moment(updates, state.mu, b2, 1)
        count = tree_lib.safe_increment(state.count)
        return out, ScaleByLionState(count=count, mu=mu)
