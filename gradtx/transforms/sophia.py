"""Sophia (2023): a clipped, diagonally preconditioned momentum with Hutchinson's estimator.

Sophia (Liu, Li, Hall, Liang & Ma, arXiv 2305.14342) divides an EMA of the gradient by an EMA
of an estimate of the Hessian's diagonal, refreshed every ``k`` steps, and clips the result
coordinate by coordinate: ``θ ← θ − η (clip(m / max(γ h, ε), 1) + λ θ)``. Sophia-H estimates
the diagonal with Hutchinson's estimator ``u ⊙ (∇²L u)`` for a random probe ``u``, one
Hessian-vector product (a forward-mode derivative of the gradient), so ``update`` needs the
objective: ``update(grads, state, params, obj_fn=lambda p: loss(p, batch))``.

Names, arguments and state layouts are optax.contrib's; the defaults follow the paper's
algorithm where optax differs (see :func:`sophia` for the arguments that give optax's numbers).
Sophia is defined for real parameters only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import numerics as tree_lib
from gradtx.core import (
    _INIT_CALL,
    GradientTransformation,
    ScalarOrSchedule,
    _as_member,
    _Foreign,
    _seed_to_key,
    chain,
    check_count,
    check_decay,
    check_dtype,
    check_nonnegative,
    check_range,
    concrete_float,
    static_field,
    transform,
    user_facing,
)
from gradtx.numerics import Scalar
from gradtx.numerics import tree_map_none as _map
from gradtx.safe_math import _saturate
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = [
    "HutchinsonState",
    "hutchinson_estimator_diag_hessian",
    "SophiaState",
    "scale_by_sophia",
    "sophia",
]

_PROBES = ("gaussian", "rademacher")


def _refuse_complex(owner: str, params: Any) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dt = getattr(leaf, "dtype", None)
        if dt is not None and jnp.issubdtype(dt, jnp.complexfloating):
            raise TypeError(
                f"{owner}: complex parameters are not supported (the Hessian diagonal, "
                f"max(γ h, ε) and the clip are defined for real numbers); got {jnp.dtype(dt).name} "
                f"at {jax.tree_util.keystr(path) or 'the root'}"
            )


# ----------------------------------------------------------------------------------------------
# Hutchinson's estimator of the Hessian's diagonal.


class HutchinsonState(NamedTuple):
    """The PRNG key the next probe is drawn from (optax.contrib's layout)."""

    key: jax.Array


@transform
class hutchinson_estimator_diag_hessian(GradientTransformation):
    """Hutchinson's estimate of the Hessian's diagonal at the params: ``u ⊙ (∇²f(θ) u)``.

    A new probe ``u`` is drawn at every call, from the standard normal distribution (the
    paper's Algorithm 1, ``probe="gaussian"``) or with independent random signs
    (``probe="rademacher"``, optax's choice). Both are unbiased, ``E[u ⊙ (H u)] = diag(H)``;
    with random signs the variance of coordinate ``i`` is ``Σ_{j≠i} H_ij²``, with normal
    probes ``2 H_ii²`` more. ``∇²f(θ) u`` is one Hessian-vector product: the forward-mode
    derivative of ``∇f`` at ``θ`` in the direction ``u`` (``jax.jvp`` of ``jax.grad``).

    ``update(updates, state, params, obj_fn=f)`` ignores ``updates`` and returns the estimate;
    ``f(params) -> scalar`` is the objective (for a mini-batch loss ``loss(params, batch)``,
    ``obj_fn=lambda p: loss(p, batch)``). Probes are drawn as optax draws them: the state's key
    is split into the next key and a subkey, the subkey into one key per leaf (in the params'
    leaf order), and each leaf's probe is drawn in float32 (``float64`` for float64 normal
    probes) and cast to the leaf's dtype. So ``probe="rademacher"`` reproduces
    ``optax.contrib.hutchinson_estimator_diag_hessian``'s numbers exactly.

    Args:
        random_seed: the PRNG key of the first probe (``jax.random.key(0)`` or
            ``jax.random.PRNGKey(0)``; an int ``n`` stands for ``jax.random.PRNGKey(n)``).
            ``None`` uses ``jax.random.PRNGKey(0)``.
        probe: ``"gaussian"`` (the paper) or ``"rademacher"`` (optax).

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.transforms.sophia import hutchinson_estimator_diag_hessian
        >>> est = hutchinson_estimator_diag_hessian(probe="rademacher")
        >>> f = lambda p: jnp.sum(jnp.array([1.0, 2.0, 3.0]) * p**2)  # diag(H) = 2, 4, 6
        >>> p = jnp.zeros(3)
        >>> h, state = est.update(p, est.init(p), p, obj_fn=f)
        >>> h.tolist()  # exact for a diagonal Hessian: u_i² = 1
        [2.0, 4.0, 6.0]

    Reference: Hutchinson, "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines", 1989; Liu et al., "Sophia: A Scalable Stochastic
    Second-order Optimizer for Language Model Pre-training", arXiv 2305.14342 (ICLR 2024),
    Algorithm 1.
    """

    random_seed: Any = None
    probe: str = static_field("gaussian", kw_only=True)

    def _check(self):
        owner = "hutchinson_estimator_diag_hessian"
        if self.probe not in _PROBES:
            raise ValueError(
                f"{owner}: probe must be 'gaussian' or 'rademacher', got {self.probe!r}"
            )
        seed = _seed_to_key(owner, "random_seed", self.random_seed)
        object.__setattr__(self, "random_seed", seed)

    def init(self, params):
        key = jax.random.PRNGKey(0) if self.random_seed is None else self.random_seed
        return HutchinsonState(key=jnp.asarray(key) if isinstance(key, np.ndarray) else key)

    def _draw(self, key: jax.Array, leaf: Any) -> jax.Array:
        dt = jnp.result_type(leaf)
        if self.probe == "rademacher":
            u = jax.random.rademacher(key, jnp.shape(leaf), jnp.float32)
        else:
            u = jax.random.normal(key, jnp.shape(leaf), tree_lib.compute_dtype(dt))
        return tree_lib.cast(u, dt)

    def update(self, updates, state, params=None, obj_fn=None, **extra_args):
        owner = "hutchinson_estimator_diag_hessian"
        if params is None:
            raise ValueError(
                f"{owner}.update: params must be given (the Hessian's diagonal is estimated at "
                "them)"
            )
        if obj_fn is None or not callable(obj_fn):
            raise ValueError(
                f"{owner}.update: obj_fn must be the objective as a function of the params "
                f"alone, obj_fn(params) -> scalar (e.g. obj_fn=lambda p: loss(p, batch)), "
                f"got {obj_fn!r}"
            )
        _refuse_complex(owner, params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        key, sub = jax.random.split(state.key)
        keys = jax.random.split(sub, len(leaves))
        probes = treedef.unflatten([self._draw(keys[i], x) for i, x in enumerate(leaves)])
        hvp = jax.jvp(jax.grad(obj_fn), (params,), (probes,))[1]
        est = jax.tree_util.tree_map(
            lambda u, hu: tree_lib.cast(lax.mul(u, tree_lib.cast(hu, u.dtype)), u.dtype),
            probes,
            hvp,
        )
        return est, HutchinsonState(key=key)


_DEFAULT_ESTIMATOR = hutchinson_estimator_diag_hessian()


# ----------------------------------------------------------------------------------------------
# Sophia.


class SophiaState(NamedTuple):
    """Step count, the gradient's EMA ``mu``, the Hessian-diagonal EMA ``nu`` and the state of
    the Hessian estimator (optax.contrib's layout)."""

    count: jax.Array
    mu: Any
    nu: Any
    hessian_fn_state: Any


@transform
class scale_by_sophia(GradientTransformation):
    """Sophia's scaling: the gradient's EMA over the clipped EMA of the Hessian's diagonal.

    With ``t`` the step (1 at the first update) and ``ĥ_t`` the estimate of
    ``hessian_diagonal_fn`` (Algorithm 3 of the paper, lines 6–13):

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1) g_t,\\qquad
        h_t = \\begin{cases} β_2 h_{t-k} + (1-β_2)\\, ĥ_t & (t-1) \\bmod k = 0 \\\\
        h_{t-1} & \\text{else} \\end{cases},\\\\
        u_t = \\mathrm{clip}\\Big(\\frac{m_t}{\\max(γ h_t, ε)}, ρ\\Big)

    with ``k = update_interval``, ``ρ = clip_threshold`` (``None``: no clip) and
    ``clip(x, ρ) = max(min(x, ρ), −ρ)``. ``h`` starts at 0 and is not bias-corrected, so the
    first steps are mostly clipped (sign steps); where ``h`` is negative or tiny the
    denominator is ``ε``. The estimator is called with ``update``'s extra keyword arguments
    (Hutchinson's needs ``obj_fn``), only on refresh steps.

    optax.contrib's ``scale_by_sophia`` differs from the paper in two ways, each an argument
    here: it divides the bias-corrected ``m_t / (1 − β1^t)`` (``bias_correction=True``), and
    its step uses ``h`` from *before* the refresh of the same step, so its first step divides
    by ``max(0, ε)`` (``stale_hessian=True``). Both arguments, with
    ``hutchinson_estimator_diag_hessian(probe="rademacher")`` (or optax's own estimator),
    give optax's numbers.

    ``nu`` is kept in the params' dtype and saturates at its largest finite value.

    Args:
        b1: decay of the gradient's EMA, in [0, 1).
        b2: decay of the Hessian diagonal's EMA, in [0, 1) (per refresh: over steps it acts
            like ``1 − (1 − b2) / update_interval``).
        eps: the least denominator ``ε >= 0``.
        gamma: ``γ >= 0``, the scale of the Hessian diagonal in the denominator.
        clip_threshold: ``ρ > 0``, the largest ``|u|`` per coordinate, or ``None``.
        update_interval: ``k >= 1``: the Hessian is estimated at steps 1, k + 1, 2k + 1, ...
        hessian_diagonal_fn: the estimator of the Hessian's diagonal, a transform whose update
            returns it (gradtx's or optax's).
        mu_dtype: dtype of ``mu`` (default: the params').
        verbose: print the win rate (the fraction of coordinates not clipped) with
            ``jax.debug.print`` every ``print_win_rate_every_n_steps`` steps.
        print_win_rate_every_n_steps: how often to print it (0: never).
        bias_correction: divide ``m_t`` by ``1 − β1^t`` (optax's choice).
        stale_hessian: precondition with ``h`` from before this step's refresh (optax's order).

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.transforms.sophia import hutchinson_estimator_diag_hessian as hutch
        >>> from gradtx.transforms.sophia import scale_by_sophia
        >>> tx = scale_by_sophia(b1=0.5, gamma=1.0, hessian_diagonal_fn=hutch(probe="rademacher"))
        >>> f = lambda p: 10.0 * jnp.sum(p**2)  # diag(H) = 20
        >>> p = jnp.array([0.1, 4.0])
        >>> u, state = tx.update(p, tx.init(p), p, obj_fn=f)  # m = g / 2, h = 0.01 · 20
        >>> [round(float(x), 4) for x in u]  # clip(m / 0.2, 1)
        [0.25, 1.0]

    Reference: Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer
    for Language Model Pre-training", arXiv 2305.14342 (ICLR 2024), Algorithm 3.
    """

    b1: Any = 0.965
    b2: Any = 0.99
    eps: Any = 1e-8
    gamma: Any = 0.01
    clip_threshold: Any = 1.0
    update_interval: Any = 10
    hessian_diagonal_fn: Any = _DEFAULT_ESTIMATOR
    mu_dtype: Any = static_field(None)
    verbose: bool = static_field(False)
    print_win_rate_every_n_steps: Any = 0
    bias_correction: bool = static_field(False, kw_only=True)
    stale_hessian: bool = static_field(False, kw_only=True)

    def _check(self):
        owner = "scale_by_sophia"
        check_decay(owner, "b1", self.b1)
        check_decay(owner, "b2", self.b2)
        check_nonnegative(owner, "eps", self.eps)
        check_nonnegative(owner, "gamma", self.gamma)
        if self.clip_threshold is not None:
            check_range(owner, "clip_threshold", self.clip_threshold, low=0.0, low_open=True)
        for name, low in (("update_interval", 1), ("print_win_rate_every_n_steps", 0)):
            value = getattr(self, name)
            check_count(owner, name, value, low=low)
            if concrete_float(value) is not None:
                object.__setattr__(self, name, int(concrete_float(value)))
        object.__setattr__(self, "mu_dtype", check_dtype(owner, "mu_dtype", self.mu_dtype))
        fn = self.hessian_diagonal_fn
        try:
            init_fn, update_fn = (fn.init, fn.update) if isinstance(fn, _Foreign) else fn
            ok = callable(init_fn) and callable(update_fn)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise TypeError(
                f"{owner}: hessian_diagonal_fn must be a gradient transformation (an "
                f"(init, update) pair whose update returns the Hessian's diagonal), got {fn!r}"
            )
        object.__setattr__(self, "hessian_diagonal_fn", _as_member(fn))

    def init(self, params):
        _refuse_complex(_INIT_CALL.outer or "scale_by_sophia", params)
        return SophiaState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_lib.tree_zeros_like(params, self.mu_dtype),
            nu=tree_lib.tree_zeros_like(params),
            hessian_fn_state=self.hessian_diagonal_fn.init(params),
        )

    def update(self, updates, state, params=None, **extra_args):
        owner = "scale_by_sophia"
        if params is None:
            raise ValueError(
                f"{owner}.update: params must be given (the Hessian's diagonal is estimated at "
                "them)"
            )
        tree_lib.check_structure(updates, state.mu, owner, "updates", "state (mu)")
        count = tree_lib.safe_increment(state.count)
        k = {
            "b1": Scalar(self.b1),
            "1-b1": Scalar(1 - self.b1),
            "b2": Scalar(self.b2),
            "1-b2": Scalar(1 - self.b2),
            "gamma": Scalar(self.gamma),
            "eps": Scalar(self.eps),
        }
        if self.bias_correction:
            k["m"] = Scalar(1 / tree_lib.bias_correction_scalar(self.b1, count))

        # lines 7-11: refresh h on steps 1, k + 1, 2k + 1, ... (the count before this step is
        # a multiple of k); the estimator runs only there
        def refresh(hess_state, nu):
            diag, hess_state = self.hessian_diagonal_fn.update(
                updates, hess_state, params, **extra_args
            )
            nu = _map(
                lambda d, v: (
                    None if v is None else _saturate(tree_lib.ema_leaf(d, v, k["b2"], k["1-b2"]))
                ),
                diag,
                nu,
            )
            return hess_state, nu

        hess_state, nu = lax.cond(
            state.count % self.update_interval == 0,
            refresh,
            lambda h, n: (h, n),
            state.hessian_fn_state,
            state.nu,
        )
        h_used = state.nu if self.stale_hessian else nu

        def leaf(g, m, h):
            if g is None:
                return None, None
            g = tree_lib.as_array(g)
            m = tree_lib.as_array(m)
            cd = tree_lib.compute_dtype(jnp.promote_types(g.dtype, m.dtype))
            mc = lax.add(
                tree_lib.smul(tree_lib.cast(g, cd), k["1-b1"]),
                tree_lib.smul(tree_lib.cast(m, cd), k["b1"]),
            )  # line 6
            num = tree_lib.smul(mc, k["m"]) if self.bias_correction else mc
            hc = tree_lib.cast(h, cd)
            den = lax.max(tree_lib.smul(hc, k["gamma"]), k["eps"](cd))
            return lax.div(num, den), tree_lib.cast(mc, m.dtype)

        pairs = _map(leaf, updates, state.mu, h_used)
        treedef = jax.tree_util.tree_structure(updates, is_leaf=tree_lib.is_none)
        parts = treedef.flatten_up_to(pairs)
        ratio = treedef.unflatten([p[0] for p in parts])
        mu = treedef.unflatten([p[1] for p in parts])

        if self.clip_threshold is not None:  # line 13: clip(·, ρ)
            rho = Scalar(self.clip_threshold)
            if self.verbose:
                self._print_win_rate(ratio, rho, count)
            ratio = _map(
                lambda r: None if r is None else jnp.clip(r, -rho(r.dtype), rho(r.dtype)), ratio
            )
        out = _map(lambda r, g: None if g is None else tree_lib.cast(r, jnp.result_type(g)),
                   ratio, updates)  # fmt: skip
        return out, SophiaState(count=count, mu=mu, nu=nu, hessian_fn_state=hess_state)

    def _print_win_rate(self, ratio: Any, rho: Scalar, count: jax.Array) -> None:
        """Print the fraction of coordinates the clip leaves alone (the authors' "win rate")."""
        leaves = [r for r in jax.tree_util.tree_leaves(ratio)]
        size = sum(int(np.size(r)) for r in leaves)
        inside = sum(jnp.sum(jnp.abs(r) < rho(r.dtype)) for r in leaves)
        win_rate = inside / max(size, 1)
        n = jnp.asarray(self.print_win_rate_every_n_steps)
        lax.cond(
            jnp.logical_and(n > 0, count % jnp.maximum(n, 1) == 0),
            lambda: jax.debug.print("Sophia win rate: {}", win_rate),
            lambda: None,
        )


@user_facing(renames={("add_decayed_weights", "mask"): "weight_decay_mask"})
def sophia(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.965,
    b2: Any = 0.99,
    eps: Any = 1e-8,
    weight_decay: Any = 1e-4,
    weight_decay_mask: Any = None,
    gamma: Any = 0.01,
    clip_threshold: Any = 1.0,
    update_interval: Any = 10,
    hessian_diagonal_fn: Any = _DEFAULT_ESTIMATOR,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: Any = 0,
    *,
    bias_correction: bool = False,
    stale_hessian: bool = False,
) -> chain:
    """Sophia: :class:`scale_by_sophia`, decoupled :class:`add_decayed_weights`, then ``−η``:
    ``θ_{t+1} = θ_t − η_t λ θ_t − η_t clip(m_t / max(γ h_t, ε), 1)`` (Algorithm 3, lines 12–13).

    ``update`` needs the params and the objective at them (for Hutchinson's estimator, the
    default): ``opt.update(grads, state, params, obj_fn=lambda p: loss(p, batch))``, with the
    same mini-batch as the gradient. Extra keyword arguments of ``update`` go to
    ``hessian_diagonal_fn``.

    The defaults are the paper's. ``bias_correction=True, stale_hessian=True`` with
    ``hessian_diagonal_fn=hutchinson_estimator_diag_hessian(probe="rademacher")`` give
    ``optax.contrib.sophia``'s numbers (see :class:`scale_by_sophia` and
    :class:`hutchinson_estimator_diag_hessian`: optax divides the bias-corrected momentum by the
    Hessian EMA of before the step's refresh, and draws random-sign probes).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from gradtx.transforms.sophia import sophia
        >>> loss = lambda p, x: jnp.sum((p["w"] - x) ** 2)
        >>> opt = sophia(0.1, weight_decay=0.0)
        >>> params = {"w": jnp.zeros(2)}
        >>> batch = jnp.array([1.0, -2.0])
        >>> g = jax.grad(loss)(params, batch)
        >>> u, state = opt.update(g, opt.init(params), params, obj_fn=lambda p: loss(p, batch))
        >>> [round(float(x), 4) for x in u["w"]]  # the first step is clipped: −η sign(m)
        [0.1, -0.1]

    Reference: Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer
    for Language Model Pre-training", arXiv 2305.14342 (ICLR 2024).
    """
    return chain(
        scale_by_sophia(
            b1,
            b2,
            eps,
            gamma,
            clip_threshold,
            update_interval,
            hessian_diagonal_fn,
            mu_dtype,
            verbose,
            print_win_rate_every_n_steps,
            bias_correction=bias_correction,
            stale_hessian=stale_hessian,
        ),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
