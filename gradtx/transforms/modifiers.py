"""Modifiers that compose with any optimizer: cautious masking, MARS's variance-reduced gradient,
sharpness-aware minimisation (SAM), stochastic rounding of low-precision parameters,
differentially private aggregation (DP-SGD), and running an optimizer on complex parameters as
pairs of real ones.

Sign convention: every gradtx optimizer returns *parameter increments* ``u`` that
:func:`gradtx.apply_updates` adds, ``θ ← θ + u`` (a descent step has ``u = −α d`` with ``d`` the
papers' update direction). Papers write ``θ ← θ − α d``; where a paper tests the sign of ``d``,
the test here is on ``−u``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import numerics as tree_lib
from gradtx.core import (
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    _as_member,
    apply_updates,
    chain,
    check_count,
    check_decay,
    check_dtype,
    check_nonnegative,
    check_range,
    hyper,
    identity,
    static_field,
    transform,
    user_facing,
)
from gradtx.numerics import Scalar
from gradtx.numerics import tree_map_none as _map
from gradtx.transforms.adaptive import scale_by_adam
from gradtx.transforms.clipping import _check_batch_axis, _clip_examples
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.momentum import trace
from gradtx.transforms.noise import _as_key
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = [
    "cautious",
    "scale_by_mars_correction",
    "ScaleByMarsCorrectionState",
    "mars_adamw",
    "normalize",
    "NormalizeState",
    "sam",
    "SAMState",
    "stochastic_round",
    "apply_updates_stochastic",
    "differentially_private_aggregate",
    "DifferentiallyPrivateAggregateState",
    "dpsgd",
    "split_real_and_imaginary",
    "SplitRealAndImaginaryState",
    "SplitRealAndImaginaryArrays",
]


# ----------------------------------------------------------------------------------------------
# Cautious optimizers (Liang et al., 2024).


@transform
class cautious(GradientTransformation):
    """Cautious wrapper: drop the coordinates of an optimizer's step that go uphill, and scale
    up the rest (Liang et al., 2024).

    With ``u`` the increment ``base_optimizer`` proposes (``θ ← θ + u``) and ``g`` the gradient
    coming in, per parameter array of ``n`` elements:

    .. math::
        φ = \\mathbb 1[u ⊙ g < 0],\\qquad
        u ← \\frac{n}{\\textstyle\\sum_i φ_i + ε}\\; u ⊙ φ.

    ``u_i g_i < 0`` is the paper's alignment test ``d_i g_i > 0`` on the update direction
    ``d = −u/α`` (the paper subtracts its update, gradtx adds it): a coordinate where the step
    points along the gradient (``u_i g_i > 0``, uphill) or where either is zero is set to zero.
    For complex parameters the test is on ``Re(conj(u) g)``, a complex coordinate read as a
    pair of reals.

    The rescaling is per parameter array, as in the paper's PyTorch line (Algorithm 1 runs
    once per parameter tensor ``p``). ``eps = 1`` gives the C-AdamW box's ``d / (nnz(φ) + 1)``;
    the default ``1e-8`` keeps the mean step size (the PyTorch line's ``1 / (mean(φ) + ε)``
    up to where ε enters). The mask applies to the whole increment: in
    ``cautious(adamw(...))`` the weight decay term is masked and rescaled with the Adam step,
    whereas the C-AdamW box masks the Adam direction and then decays unmasked; with
    ``weight_decay=0`` they coincide.

    The state is ``base_optimizer``'s own (nothing is added).

    Args:
        base_optimizer: the optimizer to wrap (any gradtx or optax transform whose output is a
            parameter increment, e.g. ``adamw(1e-3)``, ``lion(1e-4)``, ``sgd(0.1, 0.9)``).
        eps: ``ε >= 0`` in the denominator (a leaf). An array with no kept coordinate gets a
            zero step.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.cautious(gradtx.sgd(1.0, momentum=0.9))
        >>> p = jnp.zeros(4)
        >>> s = opt.init(p)
        >>> _, s = opt.update(jnp.array([1.0, 1.0, 1.0, 1.0]), s, p)  # momentum m = g
        >>> u, s = opt.update(jnp.array([-0.5, -0.2, 0.5, 2.0]), s, p)
        >>> [round(float(x), 4) for x in u]  # m = g + 0.9 m: two go uphill, two are doubled
        [0.0, 0.0, -2.8, -5.8]

    Reference: Liang, Chen, Liu & Liu, "Cautious Optimizers: Improving Training with One Line of
    Code", arXiv:2411.16085, Algorithm 1 and the C-AdamW algorithm.
    """

    base_optimizer: Any
    eps: Any = 1e-8

    _state_is_inner = True  # the state is base_optimizer's (gradtx.hyperparams walks into it)

    def _check(self):
        object.__setattr__(self, "base_optimizer", _as_member(self.base_optimizer))
        check_nonnegative("cautious", "eps", self.eps)

    def init(self, params):
        return self.base_optimizer.init(params)

    def update(self, updates, state, params=None, **extra_args):
        new, state = self.base_optimizer.update(updates, state, params, **extra_args)
        tree_lib.check_structure(new, updates, "cautious", "base_optimizer's updates", "grads")
        eps = Scalar(self.eps)

        def leaf(u, g):
            if u is None or g is None:
                return u
            u, g = tree_lib.as_array(u), tree_lib.as_array(g)
            cd = tree_lib.compute_dtype(jnp.promote_types(u.dtype, g.dtype))
            rd = tree_lib.real_dtype(cd)
            uc, gc = tree_lib.cast(u, cd), tree_lib.cast(g, cd)
            dot = jnp.real(jnp.conj(uc) * gc) if jnp.iscomplexobj(uc) else uc * gc
            keep = dot < 0
            kept = jnp.sum(keep, dtype=rd)
            some = kept > 0
            denom = jnp.where(some, kept + eps(rd), jnp.ones((), rd))  # no 0/0 when none kept
            factor = jnp.where(some, jnp.asarray(max(u.size, 1), rd) / denom, jnp.zeros((), rd))
            out = jnp.where(keep, uc * factor.astype(cd), jnp.zeros((), cd))
            return tree_lib.cast(out, u.dtype)

        return _map(leaf, new, updates), state


# ----------------------------------------------------------------------------------------------
# MARS (Yuan et al., 2024).


class ScaleByMarsCorrectionState(NamedTuple):
    """Step count and the previous step's gradient ``g_{t−1}`` (zeros before the first step)."""

    count: jax.Array
    last_grad: Any


@transform
class scale_by_mars_correction(GradientTransformation):
    """MARS's variance-reduced gradient (Yuan et al., 2024, Algorithm 1, lines 4-5), to place
    before any optimizer.

    .. math::
        c_t = g_t + γ_t \\frac{β_1}{1 − β_1} (g_t − g_{t−1}),\\qquad
        \\tilde c_t = \\begin{cases} τ\\, c_t / \\lVert c_t\\rVert & \\lVert c_t\\rVert > τ \\\\
        c_t & \\text{otherwise} \\end{cases}

    with ``τ = clip_threshold`` (the paper clips at 1) and ``‖c_t‖`` the norm of all
    parameters together (the paper's ``‖c_t‖_2`` over ``x ∈ R^d``; the authors' PyTorch code
    clips each parameter tensor separately). The output replaces the gradient: MARS-AdamW is
    this followed by AdamW (:func:`mars_adamw`), MARS-Lion this followed by Lion.

    This is the paper's practical ("approximate") variant: ``g_{t−1}`` is the gradient the
    previous step passed in, evaluated at the previous iterate on the previous batch. The exact
    variant needs ``∇f(x_{t−1}, ξ_t)``, the previous iterate's gradient on the *current* batch
    (a second gradient evaluation per step). Before the first step ``g_0 = 0``, as in the
    authors' code, so the first ``c_1 = (1 + γβ1/(1−β1)) g_1`` (then clipped).

    Args:
        gamma: ``γ >= 0``, the weight of the correction (paper: 0.025; a leaf or a schedule of
            the step count). ``γ = 0`` passes the gradient through (clipped).
        b1: the ``β1`` of the factor ``β1/(1 − β1)``, in [0, 1) (the momentum of the optimizer
            that follows, in the paper).
        clip_threshold: ``τ > 0``, or ``None`` for no clipping.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_mars_correction(gamma=0.1, b1=0.5, clip_threshold=None)
        >>> s = tx.init(jnp.zeros(2))
        >>> _, s = tx.update(jnp.array([1.0, 0.0]), s)
        >>> c, s = tx.update(jnp.array([2.0, 0.0]), s)
        >>> c.tolist()  # 2 + 0.1 · (0.5 / 0.5) · (2 − 1)
        [2.0999999046325684, 0.0]

    Reference: Yuan, Liu, Wu, Zhou & Gu, "MARS: Unleashing the Power of Variance Reduction for
    Training Large Models", arXiv:2411.10438, Algorithm 1 (and Algorithm 2, MARS-AdamW).
    """

    gamma: Any = 0.025
    b1: Any = 0.95
    clip_threshold: Any = 1.0

    flat_safe = True  # element by element and the global norm: runs on gradtx.flat's buffers

    def _check(self):
        owner = "scale_by_mars_correction"
        check_nonnegative(owner, "gamma", self.gamma)
        check_decay(owner, "b1", self.b1)
        if self.clip_threshold is not None:
            check_range(owner, "clip_threshold", self.clip_threshold, low=0.0, low_open=True)

    def init(self, params):
        return ScaleByMarsCorrectionState(
            count=jnp.zeros([], jnp.int32), last_grad=tree_lib.tree_zeros_like(params)
        )

    def update(self, updates, state, params=None, **extra_args):
        owner = "scale_by_mars_correction"
        tree_lib.check_structure(updates, state.last_grad, owner, "updates", "state (last_grad)")
        gamma, b1 = hyper(self.gamma, state.count), hyper(self.b1, state.count)
        k = Scalar(gamma * b1 / (1 - b1))

        def correct(g, prev):
            if g is None:
                return None
            g = tree_lib.as_array(g)
            cd = tree_lib.compute_dtype(g.dtype)
            gc, pc = tree_lib.cast(g, cd), tree_lib.cast(prev, cd)
            return lax.add(gc, tree_lib.smul(lax.sub(gc, pc), k))

        c = _map(correct, updates, state.last_grad)
        if self.clip_threshold is not None:
            norm = tree_lib.tree_l2_norm(c)
            tau = jnp.asarray(hyper(self.clip_threshold, state.count), norm.dtype)
            over = norm > tau
            factor = jnp.where(over, tau / jnp.where(over, norm, 1), 1)
            c = tree_lib.tree_scale(factor, c)
        out = tree_lib.tree_cast_like(c, updates)
        last = tree_lib.tree_cast_like(updates, state.last_grad)
        count = tree_lib.safe_increment(state.count)
        return out, ScaleByMarsCorrectionState(count=count, last_grad=last)


@user_facing
def mars_adamw(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.95,
    b2: Any = 0.99,
    eps: Any = 1e-8,
    gamma: Any = 0.025,
    clip_threshold: Any = 1.0,
    weight_decay: Any = 0.0,
    mask: Any = None,
    mu_dtype: Any = None,
    *,
    eps_root: Any = 0.0,
    nu_dtype: Any = None,
) -> chain:
    """MARS-AdamW: :class:`scale_by_mars_correction`, then AdamW on the corrected gradient
    (Yuan et al., 2024, Algorithm 2, the approximate variant).

    ``θ ← θ − α (m̂_t / (√v̂_t + ε) + λ θ)`` with Adam's moments of ``c̃_t`` in place of
    ``g_t``; the same ``β1`` weighs the correction and Adam's first moment. Defaults are the
    paper's and its code's (``β1 = 0.95``, ``β2 = 0.99``, ``γ = 0.025``, clipping at 1, no
    weight decay). The authors' code also runs one-dimensional parameters (biases, norms) with
    plain AdamW unless asked not to; here every parameter gets the correction (use
    :func:`gradtx.partition` for the split).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.mars_adamw(1e-3)
        >>> p = {"w": jnp.ones(2)}
        >>> u, s = opt.update({"w": jnp.array([0.3, -0.2])}, opt.init(p), p)
        >>> [round(float(x), 6) for x in u["w"]]  # Adam's first step: ±α
        [-0.001, 0.001]

    Reference: Yuan, Liu, Wu, Zhou & Gu, "MARS: Unleashing the Power of Variance Reduction for
    Training Large Models", arXiv:2411.10438.
    """
    return chain(
        scale_by_mars_correction(gamma, b1, clip_threshold),
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------------------------
# Sharpness-aware minimisation (Foret et al., 2021).


NormalizeState = EmptyState
"""State of :class:`normalize` (optax.contrib's name): it keeps nothing."""


@transform
class normalize(GradientTransformation):
    """Divide the updates by their global norm: ``u ← u / ‖u‖`` (SAM's ascent direction).

    A zero update stays zero (optax.contrib's ``normalize`` returns NaN there).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.normalize()
        >>> tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))[0]
        {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}
    """

    flat_safe = True  # the global norm: runs on gradtx.flat's buffers

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        norm = tree_lib.global_norm(updates)
        positive = norm > 0
        inv = jnp.where(positive, 1 / jnp.where(positive, norm, 1), 0)
        return tree_lib.tree_scale(inv, updates), state


class SAMState(NamedTuple):
    """State of :class:`sam`.

    ``steps_since_sync``: calls since the last outer step (``0 … sync_period − 1``);
    ``opt_state``/``adv_state``: the outer and adversarial optimizers' states; ``cache``: the
    parameters at the start of the current period, the point the outer step moves from
    (``None`` in opaque mode).
    """

    steps_since_sync: jax.Array
    opt_state: Any
    adv_state: Any
    cache: Any


@transform
class sam(GradientTransformation):
    """Sharpness-aware minimisation: adversarial steps away from the parameters, then an outer
    step from the original parameters with the gradient found there (Foret et al., 2021).

    Each period of ``sync_period`` calls to ``update`` starts at parameters ``θ``. The first
    ``sync_period − 1`` calls are adversarial: they add ``−adv_optimizer(g)`` (an ascent step:
    with ``adv_optimizer = chain(normalize(), sgd(ρ))`` it is ``+ρ g/‖g‖``). The last call
    takes the gradient it is given (at the perturbed point) to ``optimizer`` with params ``θ``
    and returns the increment that lands on ``θ + optimizer(g)``. With ``sync_period=2`` and
    that ``adv_optimizer`` this is the paper's SAM (Algorithm 1):

    .. math::
        \\hat ε = ρ\\, \\frac{∇L(θ)}{\\lVert ∇L(θ)\\rVert},\\qquad
        θ ← θ + \\mathrm{optimizer}\\big(∇L(θ + \\hat ε)\\big).

    ``opaque_mode=True`` runs the whole period inside one ``update`` call, which then needs
    ``grad_fn=`` (``grad_fn(params, i)`` returns the gradient at the ``i``-th perturbed point)
    and returns the outer step only: use it when side effects of the forward pass (batch-norm
    statistics) must only see the real parameters.

    Differences from ``optax.contrib.sam``: the same numbers for ``sync_period >= 2``; with
    ``sync_period=1`` this is ``optimizer`` itself (optax's transparent mode moves from the
    previous call's parameters there, undoing each step); the steps are selected with
    ``lax.cond``, so an ``inf`` in the branch not taken cannot turn into NaN.

    Args:
        optimizer: the outer optimizer.
        adv_optimizer: the adversarial optimizer (its increment is negated: an ascent step).
        sync_period: calls per period, ``>= 1`` (static).
        reset_state: start each period with a fresh ``adv_optimizer`` state.
        opaque_mode: run the adversarial steps inside ``update`` (needs ``grad_fn``).
        batch_axis_name: opaque mode only: average the adversarial gradients over this
            ``pmap``/``shard_map`` axis (``lax.pmean``).

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> opt = gradtx.sam(gradtx.sgd(0.1), gradtx.chain(gradtx.normalize(), gradtx.sgd(0.05)))
        >>> grad = jax.grad(lambda w: 0.5 * jnp.sum(w**2))
        >>> p = jnp.array([3.0, 4.0])
        >>> s = opt.init(p)
        >>> for _ in range(2):  # one adversarial call, one outer call
        ...     u, s = opt.update(grad(p), s, p)
        ...     p = gradtx.apply_updates(p, u)
        >>> p.tolist()  # θ − 0.1 (θ + 0.05 θ/‖θ‖)
        [2.697000026702881, 3.5959999561309814]

    Reference: Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently
    Improving Generalization", ICLR 2021 (arXiv:2010.01412), Algorithm 1.
    """

    optimizer: Any
    adv_optimizer: Any
    sync_period: int = static_field(2)
    reset_state: bool = static_field(True)
    opaque_mode: bool = static_field(False)
    batch_axis_name: Any = static_field(None)

    # Where each member's state is (for gradtx.hyperparams' walk).
    _member_states = {"optimizer": "opt_state", "adv_optimizer": "adv_state"}

    def _check(self):
        object.__setattr__(self, "optimizer", _as_member(self.optimizer))
        object.__setattr__(self, "adv_optimizer", _as_member(self.adv_optimizer))
        check_count("sam", "sync_period", self.sync_period, low=1)
        object.__setattr__(self, "sync_period", int(self.sync_period))

    def init(self, params):
        return SAMState(
            steps_since_sync=jnp.zeros([], jnp.int32),
            opt_state=self.optimizer.init(params),
            adv_state=self.adv_optimizer.init(params),
            cache=None if self.opaque_mode else params,
        )

    def update(self, updates, state, params=None, *, grad_fn=None, **extra_args):
        if params is None:
            raise ValueError("sam: update needs params (call update(grads, state, params))")
        if self.opaque_mode:
            return self._opaque(updates, state, params, grad_fn, extra_args)
        return self._transparent(updates, state, params, extra_args)

    def _transparent(self, grads, state, params, extra_args):
        step = state.steps_since_sync
        first = step == 0
        cache = _map(
            lambda p, c: None if p is None else jnp.where(first, p, c), params, state.cache
        )

        def outer(_):
            u, opt_state = self.optimizer.update(grads, state.opt_state, cache, **extra_args)
            u = _map(_from_cache, u, cache, params, grads)
            adv_state = self.adv_optimizer.init(params) if self.reset_state else state.adv_state
            return u, opt_state, adv_state

        def adversarial(_):
            u, adv_state = self.adv_optimizer.update(grads, state.adv_state, params, **extra_args)
            u = _map(lambda x, g: None if x is None else (-x).astype(g.dtype), u, grads)
            return u, state.opt_state, adv_state

        u, opt_state, adv_state = lax.cond(step == self.sync_period - 1, outer, adversarial, None)
        new_step = jnp.where(step + 1 >= self.sync_period, 0, step + 1).astype(step.dtype)
        return u, SAMState(new_step, opt_state, adv_state, cache)

    def _opaque(self, grads, state, params, grad_fn, extra_args):
        if grad_fn is None:
            raise ValueError(
                "sam: opaque_mode=True needs update(grads, state, params, grad_fn=...) with "
                "grad_fn(params, i) returning the gradient at the i-th adversarial point"
            )
        adv_params, g, adv_state = params, grads, state.adv_state
        for i in range(self.sync_period - 1):
            u, adv_state = self.adv_optimizer.update(g, adv_state, adv_params, **extra_args)
            adv_params = apply_updates(adv_params, tree_lib.tree_scale(-1.0, u))
            g = grad_fn(adv_params, i)
            if self.batch_axis_name is not None:
                g = lax.pmean(g, axis_name=self.batch_axis_name)
        if self.reset_state:
            adv_state = self.adv_optimizer.init(params)
        u, opt_state = self.optimizer.update(g, state.opt_state, params, **extra_args)
        zero = jnp.zeros([], jnp.int32)
        return u, SAMState(zero, opt_state, adv_state, None)


def _from_cache(u: Any, cache: Any, p: Any, g: Any) -> Any:
    """The increment that takes ``p`` to ``cache + u`` (in >= float32, cast like ``g``)."""
    if u is None:
        return None
    cd = tree_lib.compute_dtype(jnp.promote_types(jnp.result_type(u), jnp.result_type(p)))
    out = (cache.astype(cd) - p.astype(cd)) + u.astype(cd)
    return out.astype(jnp.result_type(g))


# ----------------------------------------------------------------------------------------------
# Stochastic rounding.


def stochastic_round(x: Any, dtype: Any, key: Any) -> jax.Array:
    """Round ``x`` to ``dtype`` at random, to one of its two neighbours, without bias.

    With ``lo <= x <= hi`` the two values of ``dtype`` next to ``x``:

    .. math::
        \\mathrm{round}(x) = \\begin{cases} hi & \\text{with probability } (x − lo)/(hi − lo)\\\\
        lo & \\text{otherwise,}\\end{cases}\\qquad \\mathbb E[\\mathrm{round}(x)] = x.

    ``x`` representable in ``dtype`` (and ``±inf``, NaN) is returned as it is; beyond the
    largest finite value of ``dtype`` it rounds as ``astype`` does. The uniform draw is in
    ``x``'s dtype, so from float32 to bfloat16 or float16 the probabilities are exact. A
    complex ``x`` has its real and imaginary parts rounded independently.

    Args:
        x: a floating or complex array (its dtype at least as precise as ``dtype``).
        dtype: the dtype to round to (e.g. ``jnp.bfloat16``).
        key: a ``jax.random`` key (or an int seed, or a raw ``uint32[2]`` key).

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> x = jnp.full(100_000, 1.0 + 2**-9)  # a quarter of the way from 1 to 1 + 2^-7
        >>> r = gradtx.stochastic_round(x, jnp.bfloat16, jax.random.key(0))
        >>> sorted(set(r.astype(jnp.float32).tolist()))
        [1.0, 1.0078125]
        >>> round(float(jnp.mean((r == 1.0078125).astype(jnp.float32))), 2)
        0.25

    Reference: Gupta, Agrawal, Gopalakrishnan & Narayanan, "Deep Learning with Limited Numerical
    Precision", ICML 2015 (arXiv:1502.02551).
    """
    dt = check_dtype("stochastic_round", "dtype", dtype)
    if dt is None:
        raise TypeError("stochastic_round: dtype must be a floating or complex dtype, got None")
    x = tree_lib.as_array(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(f"stochastic_round: x must be a floating or complex array, got {x.dtype}")
    return _stochastic_round(x, dt, _as_key(key))


@functools.partial(jax.jit, static_argnums=(1,))
def _stochastic_round(x: jax.Array, dtype: Any, key: jax.Array) -> jax.Array:
    if jnp.issubdtype(dtype, jnp.complexfloating) or jnp.iscomplexobj(x):
        if not jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(f"stochastic_round: cannot round complex {x.dtype} to {dtype}")
        part = tree_lib.real_dtype(dtype)
        k_re, k_im = jax.random.split(key)
        re = _round_real(jnp.real(x), part, k_re)
        return lax.complex(re, _round_real(jnp.imag(x), part, k_im))
    return _round_real(x, dtype, key)


def _round_real(x: jax.Array, dtype: Any, key: jax.Array) -> jax.Array:
    wide = jnp.promote_types(x.dtype, dtype)
    if wide == dtype:
        return x.astype(dtype)  # nothing to round: every value of x is one of dtype's
    xw = x.astype(wide)
    near = xw.astype(dtype)  # the nearest neighbour
    near_w = near.astype(wide)
    toward = jnp.where(xw > near_w, jnp.inf, -jnp.inf).astype(dtype)
    other = jnp.nextafter(near, toward)  # the neighbour on x's other side
    other_w = other.astype(wide)
    # P(other) = |x − near| / |other − near| (both differences exact: Sterbenz's lemma); it is
    # 0 for x = near, and NaN (never taken) for NaN, ±inf and values beyond dtype's range.
    p_other = (xw - near_w) / (other_w - near_w)
    u = jax.random.uniform(key, xw.shape, wide)
    return jnp.where(u < p_other, other, near)


def apply_updates_stochastic(params: Any, updates: Any, key: Any) -> Any:
    """``θ ← round(θ + u)``: :func:`gradtx.apply_updates` with the sum stochastically rounded
    to each parameter's dtype (:func:`stochastic_round`).

    The sum is formed in at least float32, so a bfloat16 or float16 parameter moves by an
    increment smaller than half its spacing *on average* instead of never (round-to-nearest
    returns ``θ`` itself when ``|u| < ulp(θ)/2``, so a long run of small steps stalls).
    Parameters already as precise as the sum (float32 with float32 updates) are added exactly
    as :func:`gradtx.apply_updates` does. Each leaf draws from its own sub-key of ``key``:
    pass a new key every step (``jax.random.fold_in(key, step)``).

    Training pattern (bfloat16 parameters and optimizer state, no float32 master copy)::

        opt = gradtx.adamw(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
        updates, state = opt.update(grads, state, params)
        params = gradtx.apply_updates_stochastic(params, updates, jax.random.fold_in(key, t))

    Args:
        params: the parameters (``None`` leaves stay ``None``).
        updates: increments shaped like the params.
        key: a ``jax.random`` key (or an int seed, or a raw ``uint32[2]`` key).

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> p = jnp.ones(10_000, jnp.bfloat16)
        >>> u = jnp.full(10_000, 1e-3)  # below half the spacing 2^-7 of bfloat16 at 1
        >>> gradtx.apply_updates(p, u)[0].tolist()  # nearest rounding: no change
        1.0
        >>> q = gradtx.apply_updates_stochastic(p, u, jax.random.key(0))
        >>> round(float(jnp.mean(q.astype(jnp.float32))), 3)  # moves by 1e-3 on average
        1.001

    Reference: Gupta et al., "Deep Learning with Limited Numerical Precision", ICML 2015;
    Zamirai et al., "Revisiting BFloat16 Training", arXiv:2010.06192.
    """
    tree_lib.check_structure(updates, params, "apply_updates_stochastic", "updates", "params")
    return _apply_stochastic(params, updates, _as_key(key))


@jax.jit
def _apply_stochastic(params: Any, updates: Any, key: jax.Array) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(params, is_leaf=tree_lib.is_none)
    ups = treedef.flatten_up_to(updates)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for p, u, k in zip(leaves, ups, keys, strict=False):
        if p is None:
            out.append(None)
            continue
        p, u = tree_lib.as_array(p), tree_lib.as_array(u)
        wide = jnp.promote_types(tree_lib.compute_dtype(p.dtype), u.dtype)
        if jnp.iscomplexobj(u) and not jnp.iscomplexobj(p):
            wide = tree_lib.real_dtype(wide)  # as apply_updates: the real part lands
            u = jnp.real(u)
        total = p.astype(wide) + u.astype(wide)
        out.append(
            total.astype(p.dtype) if wide == p.dtype else _stochastic_round(total, p.dtype, k)
        )
    return treedef.unflatten(out)


# ----------------------------------------------------------------------------------------------
# Differential privacy (Abadi et al., 2016).


class DifferentiallyPrivateAggregateState(NamedTuple):
    """The raw data (``jax.random.key_data``) of the key the next step's noise comes from."""

    rng_key: jax.Array


@transform
class differentially_private_aggregate(GradientTransformation):
    """DP-SGD's aggregation: clip each example's gradient, sum, add Gaussian noise, average
    (Abadi et al., 2016, Algorithm 1).

    The updates are per-example gradients, every leaf with the batch of ``B`` examples on
    axis 0:

    .. math::
        \\tilde g = \\frac1B\\Big(\\sum_{b=1}^B g_b \\min\\!\\Big(1, \\frac{C}{\\lVert g_b\\rVert}
        \\Big) + \\mathcal N(0, σ^2 C^2 I)\\Big),

    ``‖g_b‖`` the norm of example ``b``'s gradient over all leaves, ``C = l2_norm_clip``,
    ``σ = noise_multiplier``. The output has the parameters' shapes. Each step splits the
    state's key into a new key and one sub-key per leaf, as optax does, so the same key gives
    optax's noise. Place it first in a chain; accumulating wrappers (``MultiSteps``,
    ``apply_every``) would average after the noise, which is not DP-SGD.

    Args:
        l2_norm_clip: ``C >= 0``, the largest norm an example's gradient may keep.
        noise_multiplier: ``σ >= 0``, the noise's standard deviation in units of ``C``.
        key: a ``jax.random`` key or an int seed (``None``: seed 0, with a warning; the noise
            must not be predictable).
        seed: an int seed, an alias of ``key`` kept for optax compatibility.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.differentially_private_aggregate(1.0, 0.0, key=0)
        >>> g = {"w": jnp.array([[3.0, 4.0], [0.3, 0.4]])}  # two examples
        >>> u, _ = tx.update(g, tx.init({"w": jnp.zeros(2)}))
        >>> [round(float(x), 4) for x in u["w"]]  # ((0.6, 0.8) + (0.3, 0.4)) / 2
        [0.45, 0.6]

    Reference: Abadi et al., "Deep Learning with Differential Privacy", CCS 2016
    (arXiv:1607.00133), Algorithm 1.
    """

    l2_norm_clip: Any
    noise_multiplier: Any
    key: Any = None
    seed: Any = static_field(None, kw_only=True)

    _updates_like_params = False  # per-example gradients: a batch axis the params do not have

    def _check(self):
        owner = "differentially_private_aggregate"
        check_nonnegative(owner, "l2_norm_clip", self.l2_norm_clip)
        check_nonnegative(owner, "noise_multiplier", self.noise_multiplier)
        _check_key(owner, "key", self.key)
        _check_key(owner, "seed", self.seed)
        if self.seed is not None:
            if self.key is not None:
                raise ValueError(f"{owner}: pass only one of key and seed")
            object.__setattr__(self, "key", self.seed)
            object.__setattr__(self, "seed", None)
        if self.key is None:
            warnings.warn(
                f"{owner}: no key given, using seed 0; pass key= (a fresh one per training run)",
                stacklevel=3,
            )
            object.__setattr__(self, "key", 0)

    def init(self, params):
        return DifferentiallyPrivateAggregateState(rng_key=jax.random.key_data(_as_key(self.key)))

    def update(self, updates, state, params=None, **extra_args):
        owner = "differentially_private_aggregate"
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        leaves = _check_batch_axis(leaves, owner)
        clipped, _ = _clip_examples(leaves, self.l2_norm_clip)
        impl = jax.random.key_impl(_as_key(self.key))
        new_key, *keys = jax.random.split(
            jax.random.wrap_key_data(state.rng_key, impl=impl), len(leaves) + 1
        )
        std = Scalar(self.l2_norm_clip * self.noise_multiplier)
        batch = leaves[0].shape[0]

        def noisy(c, g, k):
            n = jax.random.normal(k, c.shape, c.dtype)
            return ((c + tree_lib.smul(n, std)) / batch).astype(g.dtype)

        out = [noisy(c, g, k) for c, g, k in zip(clipped, leaves, keys, strict=True)]
        return treedef.unflatten(out), DifferentiallyPrivateAggregateState(
            rng_key=jax.random.key_data(new_key)
        )


def _check_key(owner: str, name: str, value: Any) -> None:
    """A random key argument: ``None``, an int seed, a typed ``jax.random`` key or raw integer
    key data (``uint32[2]``); traced values are not checked."""
    if value is None or isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, bool) or isinstance(value, str | bytes | list | tuple | dict | set):
        raise TypeError(f"{owner}: {name} must be an int seed or a jax.random key, got {value!r}")
    if isinstance(value, int | np.integer):
        return
    dtype = getattr(value, "dtype", None)
    if dtype is not None and (
        jnp.issubdtype(dtype, jax.dtypes.prng_key) or jnp.issubdtype(dtype, jnp.integer)
    ):
        return
    raise ValueError(f"{owner}: {name} must be an int seed or a jax.random key, got {value!r}")


@user_facing(
    renames={("trace", "decay"): "momentum", ("differentially_private_aggregate", "key"): "seed"}
)
def dpsgd(
    learning_rate: ScalarOrSchedule,
    l2_norm_clip: Any,
    noise_multiplier: Any,
    seed: Any,
    momentum: Any = None,
    nesterov: bool = False,
) -> chain:
    """DP-SGD: :class:`differentially_private_aggregate` of per-example gradients, optional
    (Nesterov) momentum (:class:`gradtx.trace`), then ``−α``.

    ``update`` takes per-example gradients (batch on axis 0 of every leaf, e.g. from
    ``jax.vmap(jax.grad(loss), in_axes=(None, 0))``) and returns an increment shaped like
    the params.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.dpsgd(0.1, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0)
        >>> p = jnp.zeros(2)
        >>> u, s = opt.update(jnp.array([[3.0, 4.0], [0.0, 0.5]]), opt.init(p), p)
        >>> [round(float(x), 4) for x in u]  # −0.1 · ((0.6, 0.8) + (0, 0.5)) / 2
        [-0.03, -0.065]

    Reference: Abadi et al., "Deep Learning with Differential Privacy", CCS 2016.
    """
    return chain(
        differentially_private_aggregate(l2_norm_clip, noise_multiplier, seed),
        trace(momentum, nesterov) if momentum is not None else identity(),
        scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------------------------
# Complex parameters as pairs of real ones (optax.contrib's split_real_and_imaginary).


class SplitRealAndImaginaryArrays(NamedTuple):
    """A complex array seen by :class:`split_real_and_imaginary`'s inner transform: its real and
    imaginary parts, two real arrays of its shape."""

    real: jax.Array
    imaginary: jax.Array


class SplitRealAndImaginaryState(NamedTuple):
    """:class:`split_real_and_imaginary`'s state: the inner transform's state, built on the
    split parameters (each complex leaf a :class:`SplitRealAndImaginaryArrays`)."""

    inner_state: Any


def _is_pair(x: Any) -> bool:
    return isinstance(x, SplitRealAndImaginaryArrays)


def _split(tree: Any) -> Any:
    """Each complex leaf as a (real, imaginary) pair; real leaves and ``None`` as they are."""

    def leaf(x):
        if x is None or not jnp.iscomplexobj(x):
            return x
        x = tree_lib.as_array(x)
        return SplitRealAndImaginaryArrays(lax.real(x), lax.imag(x))

    return _map(leaf, tree)


def _merge(out: Any, like: Any) -> Any:
    """Pairs back into complex leaves of ``like``'s dtype (the incoming updates')."""

    def leaf(u, g):
        if not _is_pair(u):
            return u
        dt = jnp.result_type(g) if g is not None else None
        z = lax.complex(u.real, tree_lib.cast(u.imaginary, jnp.result_type(u.real)))
        return z if dt is None else tree_lib.cast(z, dt)

    treedef = jax.tree_util.tree_structure(like, is_leaf=tree_lib.is_none)
    outs = treedef.flatten_up_to(jax.tree_util.tree_map(lambda x: x, out, is_leaf=_is_pair))
    return treedef.unflatten([leaf(u, g) for u, g in zip(outs, treedef.flatten_up_to(like),
                                                          strict=True)])  # fmt: skip


@transform
class split_real_and_imaginary(GradientTransformation):
    """Run ``inner`` on complex parameters as if each were two real ones.

    Every complex leaf ``z = x + iy`` of the params and updates is handed to ``inner`` as the
    pair ``(x, y)`` (a :class:`SplitRealAndImaginaryArrays`); the pair ``(u_x, u_y)`` of
    increments it returns is put back together as ``u_x + i u_y``. Real leaves pass through as
    they are. So an optimizer whose formulas are written for reals (``g²`` in Adam, ``sign(g)``
    in Lion) sees ℂⁿ as ℝ²ⁿ: Adam's second moment is kept separately for ``Re g`` and ``Im g``,
    where Adam on the complex leaf itself keeps one ``|g|²`` for both.

    ``jax.grad`` of a real loss with respect to complex parameters returns the conjugate of
    the steepest-ascent direction: pass ``jax.tree.map(jnp.conj, grads)`` to descend.

    Args:
        inner: the transform (gradtx or optax) to run on the split parameters. Extra keyword
            arguments of ``update`` (``value=``, ...) are passed on to it.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.split_real_and_imaginary(gradtx.adam(0.1))
        >>> z = jnp.array([1.0 + 1.0j])
        >>> u, _ = opt.update(jnp.array([3.0 - 0.5j]), opt.init(z), z)
        >>> [round(float(u[0].real), 4), round(float(u[0].imag), 4)]  # −α sign(g) on each part
        [-0.1, 0.1]

    Reference: optax.contrib.split_real_and_imaginary (optax issue 196 on complex optimisation).
    """

    inner: Any

    def _check(self):
        object.__setattr__(self, "inner", _as_member(self.inner))

    def init(self, params):
        return SplitRealAndImaginaryState(inner_state=self.inner.init(_split(params)))

    def update(self, updates, state, params=None, **extra_args):
        split_params = None if params is None else _split(params)
        out, inner_state = self.inner.update(
            _split(updates), state.inner_state, split_params, **extra_args
        )
        return _merge(out, updates), SplitRealAndImaginaryState(inner_state=inner_state)
