"""Adaptive per-coordinate scaling: Adam and its relatives, RMSProp, AdaGrad, AdaDelta.

Each divides a (first-moment) numerator by a running measure of gradient magnitude, following
the survey frame ``Δθ = −α M_t / √(G_t + ε)``. The division is carried out in at least float32
(see :func:`gradtx.numerics.compute_dtype`) so zero gradients in float16/bfloat16 give zero,
not NaN.

Squared moments never overflow to ``inf``: they saturate at the largest finite value of their
dtype (``|g|² > 3.4e38``, i.e. ``|g| ≳ 1.8e19``, in float32 and bfloat16; ``|g| > 256`` in
float16), so a huge gradient leaves a finite state instead of ``inf`` that later turns into
``inf − inf = NaN``. The price is a capped denominator: while a coordinate's moment sits at the
cap its step is ``m̂/√v̂`` with ``v̂`` smaller than the true value, i.e. finite but larger than the
method's usual step (up to ``|g| / 1.8e19`` in float32), and the cap decays away at the moment's
rate (about ``89 / (1 − β)`` steps from float32's maximum back to ``O(1)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    check_decay,
    check_dtype,
    check_nonnegative,
    check_range,
    concrete_float,
    hyper,
    static_field,
    transform,
)
from gradtx.numerics import Scalar
from gradtx.numerics import tree_map_none as _map
from gradtx.safe_math import _saturate, _saturate_tree

__all__ = [
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_adamax",
    "scale_by_rms",
    "scale_by_stddev",
    "scale_by_rss",
    "scale_by_adadelta",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByRmsState",
    "ScaleByRStdDevState",
    "ScaleByRssState",
    "ScaleByAdaDeltaState",
]


def _normalise(num: Any, sq: Any, like: Any, *, eps: Any, eps_root: Any = 0.0) -> Any:
    """``num / (sqrt(sq + eps_root) + eps)`` leaf by leaf, in >= float32, cast like ``like``."""

    def f(n, s, g):
        if g is None:
            return None
        n = n.astype(tree_lib.compute_dtype(n.dtype))
        s = s.astype(tree_lib.compute_dtype(s.dtype))
        return (n / (jnp.sqrt(s + eps_root) + eps)).astype(g.dtype)

    return _map(f, num, sq, like)


def _rsqrt_scale(g_tree: Any, sq: Any, *, eps: Any, eps_in_sqrt: bool) -> Any:
    """``g / sqrt(sq + eps)`` (eps inside) or ``g / (sqrt(sq) + eps)`` (eps outside)."""

    def f(g, s):
        if g is None:
            return None
        cd = tree_lib.compute_dtype(g.dtype)
        s = s.astype(tree_lib.real_dtype(cd))
        scaling = jax.lax.rsqrt(s + eps) if eps_in_sqrt else 1 / (jnp.sqrt(s) + eps)
        return (scaling * g.astype(cd)).astype(g.dtype)

    return _map(f, g_tree, sq)


def _moment_dtypes(owner: str, obj: Any, *names: str) -> None:
    for n in names:
        object.__setattr__(obj, n, check_dtype(owner, n, getattr(obj, n)))


def _nu_init(params: Any, nu_dtype: Any, value: float = 0.0) -> Any:
    """Second-moment state: real-valued (``|g|^2``), in ``nu_dtype`` or the params' real dtype."""
    return _map(
        lambda p: (
            None
            if p is None
            else tree_lib.full_like(p, value, nu_dtype or tree_lib.real_dtype(jnp.result_type(p)))
        ),
        params,
    )


# ----------------------------------------------------------------------------------------------
# Adam family.


class ScaleByAdamState(NamedTuple):
    """Step count, first moment ``mu`` (EMA of g) and second moment ``nu`` (EMA of |g|²)."""

    count: jax.Array
    mu: Any
    nu: Any


def _adam_state(params: Any, mu_dtype: Any = None, nu_dtype: Any = None) -> ScaleByAdamState:
    """A zero Adam-style state: count 0, ``mu`` like the params, real ``nu`` (see ``_nu_init``)."""
    return ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=tree_lib.tree_zeros_like(params, mu_dtype),
        nu=_nu_init(params, nu_dtype),
    )


@transform
class scale_by_adam(GradientTransformation):
    """Adam's scaling (Kingma & Ba, 2015, Algorithm 1).

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1) g_t,\\quad v_t = β_2 v_{t-1} + (1-β_2) |g_t|^2,\\\\
        \\hat m_t = m_t / (1-β_1^t),\\quad \\hat v_t = v_t / (1-β_2^t),\\quad
        u_t = \\hat m_t / (\\sqrt{\\hat v_t + ε_{root}} + ε).

    With ``nesterov=True`` the numerator looks one step ahead (Dozat, 2016, the simplified form
    optax uses): ``m̃ = β1 m_t / (1 − β1^(t+1)) + (1 − β1) g_t / (1 − β1^t)``. Dozat's Algorithm 2
    (which also multiplies ``v̂`` by ``β2``) and PyTorch's NAdam (with a momentum-decay schedule
    ψ) compute different numbers; this is neither.

    Scheduled ``b1``/``b2`` (callables of the step count) are evaluated at the count before the
    step, ``β(t − 1)`` at step ``t``, and the bias corrections use that current value,
    ``1 − β(t − 1)^t``, not a product of the past values.

    ``ν`` saturates at the largest finite value of its dtype (reached for ``|g| ≳ 1.8e19`` in
    float32, ``|g| > 256`` in float16) instead of overflowing to ``inf``: the state stays finite,
    but while ``ν`` sits at the cap that coordinate's step is larger than Adam's usual (up to
    ``|g| / 1.8e19``), and the cap decays away in about ``89 / (1 − β2)`` steps.

    Args:
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the denominator outside the square root.
        eps_root: added inside the square root (needed to differentiate through the update).
        mu_dtype: dtype of ``mu`` (e.g. ``jnp.bfloat16`` to halve its memory).
        nesterov: use the Nadam numerator.
        nu_dtype: dtype of ``nu`` (default: the params' real dtype).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_adam()
        >>> u, _ = tx.update(jnp.array([0.3, -2.0]), tx.init(jnp.zeros(2)))
        >>> [round(float(x), 4) for x in u]  # the first step is ±1
        [1.0, -1.0]

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    b1: Any = 0.9
    b2: Any = 0.999
    eps: Any = 1e-8
    eps_root: Any = 0.0
    mu_dtype: Any = static_field(None)
    nesterov: bool = static_field(False, kw_only=True)
    nu_dtype: Any = static_field(None, kw_only=True)

    def _check(self):
        check_decay("scale_by_adam", "b1", self.b1)
        check_decay("scale_by_adam", "b2", self.b2)
        check_nonnegative("scale_by_adam", "eps", self.eps)
        check_nonnegative("scale_by_adam", "eps_root", self.eps_root)
        _moment_dtypes("scale_by_adam", self, "mu_dtype", "nu_dtype")

    def init(self, params):
        return _adam_state(params, self.mu_dtype, self.nu_dtype)

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_adam", "updates", "state (mu)")
        b1, b2 = hyper(self.b1, state.count), hyper(self.b2, state.count)
        count = tree_lib.safe_increment(state.count)
        k = _adam_scalars(b1, b2, count, self.eps, self.eps_root, self.nesterov)

        def leaf(g, m, v):
            if g is None:
                return None, None, None
            g = tree_lib.as_array(g)
            m = tree_lib.ema_leaf(g, m, k["b1"], k["1-b1"])
            v = _saturate(tree_lib.ema_leaf(tree_lib.abs_sq(g), v, k["b2"], k["1-b2"]))
            cd = tree_lib.compute_dtype(m.dtype)
            num = tree_lib.smul(tree_lib.cast(m, cd), k["m"])
            if self.nesterov:
                num = lax.add(num, tree_lib.smul(tree_lib.cast(g, cd), k["g"]))
            vd = tree_lib.cast(v, tree_lib.compute_dtype(v.dtype))
            if k["eps_root"] is not None:
                vd = lax.add(vd, k["eps_root"](vd.dtype))
            den = lax.add(lax.sqrt(vd), k["eps"](vd.dtype))
            return tree_lib.cast(lax.div(num, tree_lib.cast(den, cd)), g.dtype), m, v

        out, mu, nu = _unzip3(_map(leaf, updates, state.mu, state.nu), updates)
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)


def _adam_scalars(b1, b2, count, eps, eps_root, nesterov):
    """Adam's per-step scalars, once per step (Kingma & Ba, §2, the "more efficient" order).

    ``m̂ / (sqrt(v̂ + ε_root) + ε)`` with ``m̂ = m/(1−β1^t)``, ``v̂ = v/(1−β2^t)`` equals
    ``m · s/(1−β1^t) / (sqrt(v + ε_root(1−β2^t)) + ε s)`` with ``s = sqrt(1−β2^t)``: the bias
    corrections become two scalars instead of two divisions per element. For Nadam's numerator
    ``β1 m/(1−β1^{t+1}) + (1−β1) g/(1−β1^t)`` the factors of ``m`` and ``g`` are scalars too.
    """
    c1 = tree_lib.bias_correction_scalar(b1, count)
    c2 = tree_lib.bias_correction_scalar(b2, count)
    s = jnp.sqrt(c2)
    k = {
        "b1": Scalar(b1),
        "1-b1": Scalar(1 - b1),
        "b2": Scalar(b2),
        "1-b2": Scalar(1 - b2),
        "eps": Scalar(eps * s),
        "eps_root": None if _is_zero(eps_root) else Scalar(eps_root * c2),
    }
    if nesterov:
        c1_next = tree_lib.bias_correction_scalar(b1, tree_lib.safe_increment(count))
        k["m"] = Scalar(b1 * s / c1_next)
        k["g"] = Scalar((1 - b1) * s / c1)
    else:
        k["m"] = Scalar(s / c1)
    return k


def _is_zero(x: Any) -> bool:
    """A concrete zero (then ``ε_root`` adds no operation); traced values are not known."""
    return concrete_float(x) == 0


def _unzip3(tree: Any, like: Any) -> tuple[Any, Any, Any]:
    """Split a tree of 3-tuples (one per leaf of ``like``) into three trees."""
    treedef = jax.tree_util.tree_structure(like, is_leaf=tree_lib.is_none)
    parts = treedef.flatten_up_to(tree)
    return tuple(treedef.unflatten([p[i] for p in parts]) for i in range(3))


class ScaleByAmsgradState(NamedTuple):
    """Adam's state plus ``nu_max``, the running maximum of the (corrected) second moment."""

    count: jax.Array
    mu: Any
    nu: Any
    nu_max: Any


@transform
class scale_by_amsgrad(GradientTransformation):
    """AMSGrad: Adam whose denominator never decreases (Reddi et al., 2018, Algorithm 2).

    As :class:`scale_by_adam`, with ``v̂max_t = max(v̂max_{t−1}, v̂_t)`` in the denominator:
    ``u = m̂ / (sqrt(v̂max + ε_root) + ε)``. The bias corrections can be switched off
    (``bias_correction_mu``/``bias_correction_nu``) to get the paper's uncorrected form.

    ``ν`` and ``v̂max`` saturate at the largest finite value of their dtype, as in
    :class:`scale_by_adam` (``v̂max`` then stays at the cap: it never decreases).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_amsgrad()
        >>> u, _ = tx.update(jnp.array([4.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)
        1.0

    Reference: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """

    b1: Any = 0.9
    b2: Any = 0.999
    eps: Any = 1e-8
    eps_root: Any = 0.0
    mu_dtype: Any = static_field(None)
    bias_correction_mu: bool = static_field(True)
    bias_correction_nu: bool = static_field(True)
    nu_dtype: Any = static_field(None, kw_only=True)

    def _check(self):
        check_decay("scale_by_amsgrad", "b1", self.b1)
        check_decay("scale_by_amsgrad", "b2", self.b2)
        check_nonnegative("scale_by_amsgrad", "eps", self.eps)
        check_nonnegative("scale_by_amsgrad", "eps_root", self.eps_root)
        _moment_dtypes("scale_by_amsgrad", self, "mu_dtype", "nu_dtype")

    def init(self, params):
        nu = _nu_init(params, self.nu_dtype)
        return ScaleByAmsgradState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_lib.tree_zeros_like(params, self.mu_dtype),
            nu=nu,
            nu_max=nu,
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_amsgrad", "updates", "state (mu)")
        b1, b2 = hyper(self.b1, state.count), hyper(self.b2, state.count)
        mu = tree_lib.update_moment(updates, state.mu, b1, 1)
        nu = _saturate_tree(tree_lib.update_moment_per_elem_norm(updates, state.nu, b2, 2))
        count = tree_lib.safe_increment(state.count)
        mu_hat = tree_lib.bias_correction(mu, b1, count) if self.bias_correction_mu else mu
        nu_hat = tree_lib.bias_correction(nu, b2, count) if self.bias_correction_nu else nu
        nu_max = _map(
            lambda a, b: None if a is None else _saturate(jnp.maximum(a, b).astype(a.dtype)),
            state.nu_max,
            nu_hat,
        )
        out = _normalise(mu_hat, nu_max, updates, eps=self.eps, eps_root=self.eps_root)
        return out, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)


@transform
class scale_by_adamax(GradientTransformation):
    """AdaMax: Adam with the infinity norm (Kingma & Ba, 2015, Algorithm 2).

    ``m ← β1 m + (1 − β1) g``; ``u_t ← max(β2 u_{t−1}, |g| + ε)``; output ``m / ((1 − β1^t) u)``.
    (ε inside the max, as optax, keeps the first division finite.)

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_adamax()
        >>> u, _ = tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)
        -1.0

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, §7.1.
    """

    b1: Any = 0.9
    b2: Any = 0.999
    eps: Any = 1e-8

    def _check(self):
        check_decay("scale_by_adamax", "b1", self.b1)
        check_decay("scale_by_adamax", "b2", self.b2)
        check_nonnegative("scale_by_adamax", "eps", self.eps)

    def init(self, params):
        return _adam_state(params)

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_adamax", "updates", "state (mu)")
        b1, b2 = hyper(self.b1, state.count), hyper(self.b2, state.count)
        count = tree_lib.safe_increment(state.count)
        mu = tree_lib.update_moment(updates, state.mu, b1, 1)
        nu = _map(
            lambda g, n: (
                None
                if g is None
                else jnp.maximum(b2 * n, jnp.abs(g).astype(n.dtype) + self.eps).astype(n.dtype)
            ),
            updates,
            state.nu,
        )
        mu_hat = tree_lib.bias_correction(mu, b1, count)

        def divide(m, n, g):
            # nu >= eps > 0 unless eps underflows in a low-precision dtype; 0/0 then gives 0.
            if g is None:
                return None
            n = n.astype(tree_lib.compute_dtype(n.dtype))
            return jnp.where(n > 0, m / jnp.where(n > 0, n, 1), 0).astype(g.dtype)

        out = _map(divide, mu_hat, nu, updates)
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)


# ----------------------------------------------------------------------------------------------
# RMSProp and its centred form.


class ScaleByRmsState(NamedTuple):
    """EMA of squared gradients ``nu`` (and the step count, kept for bias correction)."""

    nu: Any
    count: Any = None


@transform
class scale_by_rms(GradientTransformation):
    """RMSProp's scaling ("leaky AdaGrad"; Tieleman & Hinton, 2012, lecture 6.5).

    ``G ← β G + (1 − β) |g|²``; ``u = g / sqrt(G + ε)`` (``eps_in_sqrt=True``) or
    ``u = g / (sqrt(G) + ε)`` (the course notes' form). With ``bias_correction`` ``G`` is divided
    by ``1 − β^t`` first; ``G`` starts at ``initial_scale``.

    ``G`` saturates at the largest finite value of its dtype (``|g| ≳ 1.8e19`` in float32)
    instead of overflowing; see :class:`scale_by_adam` for what that does to the step.

    Args:
        decay: β in [0, 1] (0.9 or 0.99 in the notes).
        eps: the stabiliser.
        initial_scale: initial value of ``G``.
        eps_in_sqrt: put ε inside the square root.
        bias_correction: divide ``G`` by ``1 − β^t``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_rms(decay=0.75, eps=0.0)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)  # 2 / sqrt(0.25 * 4)
        2.0

    Reference: Tieleman & Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for
    Machine Learning, 2012.
    """

    decay: Any = 0.9
    eps: Any = 1e-8
    initial_scale: Any = 0.0
    eps_in_sqrt: bool = static_field(True)
    bias_correction: bool = static_field(False)

    def _check(self):
        # with bias correction, decay = 1 would divide by 1 - 1^t = 0
        check_range(
            "scale_by_rms", "decay", self.decay, low=0.0, high=1.0, high_open=self.bias_correction
        )
        check_nonnegative("scale_by_rms", "eps", self.eps)
        check_nonnegative("scale_by_rms", "initial_scale", self.initial_scale)

    def init(self, params):
        count = jnp.zeros([], jnp.int32) if self.bias_correction or callable(self.decay) else None
        return ScaleByRmsState(nu=_nu_init(params, None, self.initial_scale), count=count)

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.nu, "scale_by_rms", "updates", "state (nu)")
        decay = hyper(self.decay, state.count)
        nu = _saturate_tree(tree_lib.update_moment_per_elem_norm(updates, state.nu, decay, 2))
        count = None if state.count is None else tree_lib.safe_increment(state.count)
        nu_hat = tree_lib.bias_correction(nu, decay, count) if self.bias_correction else nu
        out = _rsqrt_scale(updates, nu_hat, eps=self.eps, eps_in_sqrt=self.eps_in_sqrt)
        return out, ScaleByRmsState(nu=nu, count=count)


class ScaleByRStdDevState(NamedTuple):
    """EMAs of gradients ``mu`` and squared gradients ``nu`` (and the step count)."""

    mu: Any
    nu: Any
    count: Any = None


@transform
class scale_by_stddev(GradientTransformation):
    """Centred RMSProp: divide by the running standard deviation (Graves, 2013, eq. 38–40).

    ``m ← β m + (1 − β) g``; ``G ← β G + (1 − β) |g|²``; ``u = g / sqrt(G − |m|² + ε)`` (or
    ``g / (sqrt(G − |m|²) + ε)`` with ``eps_in_sqrt=False``). Arguments as :class:`scale_by_rms`.

    ``G`` and ``|m|²`` saturate at the largest finite value of their dtype; where ``G`` is at the
    cap, or ``G − |m|²`` is too negative for the square root (impossible in exact arithmetic;
    a capped ``G`` decaying below a large ``|m|²``), ``G`` replaces ``G − |m|²``: the step is
    RMSProp's there rather than ``g / √ε`` or NaN.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_stddev(decay=0.5, eps=0.0)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)  # 2 / sqrt(0.5*4 - 1)
        2.0

    Reference: Graves, "Generating Sequences With Recurrent Neural Networks", arXiv:1308.0850.
    """

    decay: Any = 0.9
    eps: Any = 1e-8
    initial_scale: Any = 0.0
    eps_in_sqrt: bool = static_field(True)
    bias_correction: bool = static_field(False)

    def _check(self):
        # with bias correction, decay = 1 would divide by 1 - 1^t = 0
        check_range(
            "scale_by_stddev",
            "decay",
            self.decay,
            low=0.0,
            high=1.0,
            high_open=self.bias_correction,
        )
        check_nonnegative("scale_by_stddev", "eps", self.eps)
        check_nonnegative("scale_by_stddev", "initial_scale", self.initial_scale)

    def init(self, params):
        count = jnp.zeros([], jnp.int32) if self.bias_correction or callable(self.decay) else None
        return ScaleByRStdDevState(
            mu=tree_lib.tree_zeros_like(params),
            nu=_nu_init(params, None, self.initial_scale),
            count=count,
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_stddev", "updates", "state (mu)")
        decay = hyper(self.decay, state.count)
        mu = tree_lib.update_moment(updates, state.mu, decay, 1)
        nu = _saturate_tree(tree_lib.update_moment_per_elem_norm(updates, state.nu, decay, 2))
        count = None if state.count is None else tree_lib.safe_increment(state.count)
        if self.bias_correction:
            mu_hat = tree_lib.bias_correction(mu, decay, count)
            nu_hat = tree_lib.bias_correction(nu, decay, count)
        else:
            mu_hat, nu_hat = mu, nu
        floor = -self.eps if self.eps_in_sqrt else 0.0
        var = _map(lambda n, m: _variance(n, m, floor), nu_hat, mu_hat)
        out = _rsqrt_scale(updates, var, eps=self.eps, eps_in_sqrt=self.eps_in_sqrt)
        return out, ScaleByRStdDevState(mu=mu, nu=nu, count=count)


def _variance(n: Any, m: Any, floor: Any) -> Any:
    """``G − |m|²`` for centred RMSProp, with ``|m|²`` saturated, or ``G`` itself (RMSProp's
    denominator) where that difference means nothing: where ``G`` is at (or, bias corrected,
    above) its cap, and where the difference is below ``floor`` (``−ε`` or 0: the square root
    would be NaN). ``G ≥ |m|²`` in exact arithmetic; a ``G`` that was capped and is decaying
    can fall below a large ``|m|²``. Every result that was finite without the guard is
    unchanged."""
    if n is None:
        return None
    var = n - _saturate(tree_lib.abs_sq(m).astype(n.dtype))
    return jnp.where((n >= jnp.finfo(n.dtype).max) | (var < floor), n, var)


# ----------------------------------------------------------------------------------------------
# AdaGrad and AdaDelta.


class ScaleByRssState(NamedTuple):
    """The running sum of squared gradients ``G``."""

    sum_of_squares: Any


@transform
class scale_by_rss(GradientTransformation):
    """AdaGrad's scaling by the root of the sum of squares (Duchi et al., 2011).

    ``G ← G + |g|²``, ``G_0 = initial_accumulator_value``; ``u = g / sqrt(G + ε)`` (the chapter's
    form and optax's, the default) or ``u = g / (sqrt(G) + ε)`` with ``eps_in_sqrt=False`` (the
    course notes, which also start at ``G_0 = 0``). Where ``G == 0`` the output is 0.

    ``G`` saturates at the largest finite value of its dtype instead of overflowing; as a sum it
    never decays, so a coordinate whose ``G`` reached the cap keeps steps of ``g / 1.8e19``
    (float32) from then on, as it would (smaller still) in exact arithmetic.

    Args:
        initial_accumulator_value: ``G_0`` (optax: 0.1; the course notes: 0).
        eps: the stabiliser (1e-7 in both sources).
        eps_in_sqrt: put ε inside the square root.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
        >>> u, _ = tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])
        -1.0

    Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 2011.
    """

    initial_accumulator_value: Any = 0.1
    eps: Any = 1e-7
    eps_in_sqrt: bool = static_field(True, kw_only=True)

    def _check(self):
        check_nonnegative(
            "scale_by_rss", "initial_accumulator_value", self.initial_accumulator_value
        )
        check_nonnegative("scale_by_rss", "eps", self.eps)

    def init(self, params):
        return ScaleByRssState(
            sum_of_squares=_nu_init(params, None, self.initial_accumulator_value)
        )

    def update(self, updates, state, params=None, **extra_args):
        ss0 = state.sum_of_squares
        tree_lib.check_structure(updates, ss0, "scale_by_rss", "updates", "state")
        ss = _map(
            lambda g, s: None if g is None else _saturate(s + tree_lib.abs_sq(g).astype(s.dtype)),
            updates,
            ss0,
        )
        scaled = _rsqrt_scale(updates, ss, eps=self.eps, eps_in_sqrt=self.eps_in_sqrt)
        out = _map(
            lambda u, s: None if u is None else jnp.where(s > 0, u, jnp.zeros_like(u)), scaled, ss
        )
        return out, ScaleByRssState(sum_of_squares=ss)


class ScaleByAdaDeltaState(NamedTuple):
    """EMAs of squared gradients ``e_g`` and of squared updates ``e_x``."""

    e_g: Any
    e_x: Any


@transform
class scale_by_adadelta(GradientTransformation):
    """AdaDelta's scaling (Zeiler, 2012, Algorithm 1).

    ``G ← ρ G + (1 − ρ) |g|²``; ``Δ = sqrt(X + ε) / sqrt(G + ε) · g``; ``X ← ρ X + (1 − ρ) |Δ|²``.
    The output is ``Δ``; :func:`gradtx.adadelta` multiplies it by ``−α`` (α = 1 is the paper).

    Both accumulators saturate at the largest finite value of their dtype instead of
    overflowing (``|g| ≳ 1.8e19`` in float32); see :class:`scale_by_adam`.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_adadelta(rho=0.0, eps=1.0)
        >>> u, _ = tx.update(jnp.array([0.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])
        0.0

    Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012.
    """

    rho: Any = 0.9
    eps: Any = 1e-6

    def _check(self):
        check_range("scale_by_adadelta", "rho", self.rho, low=0.0, high=1.0)
        check_nonnegative("scale_by_adadelta", "eps", self.eps)

    def init(self, params):
        return ScaleByAdaDeltaState(e_g=_nu_init(params, None), e_x=_nu_init(params, None))

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.e_g, "scale_by_adadelta", "updates", "state")
        rho, eps = self.rho, self.eps
        e_g = _saturate_tree(tree_lib.update_moment_per_elem_norm(updates, state.e_g, rho, 2))

        def step(g, eg, ex):
            if g is None:
                return None
            cd = tree_lib.compute_dtype(g.dtype)
            ratio = jnp.sqrt(ex.astype(cd) + eps) / jnp.sqrt(eg.astype(cd) + eps)
            return (ratio * g.astype(cd)).astype(g.dtype)

        out = _map(step, updates, e_g, state.e_x)
        e_x = _saturate_tree(tree_lib.update_moment_per_elem_norm(out, state.e_x, rho, 2))
        return out, ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)
