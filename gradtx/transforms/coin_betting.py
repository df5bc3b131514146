"""Learning rates from coin betting: COCOB (2017) and Mechanic (2023), with optax.contrib's names.

- COCOB-Backprop (Orabona & Tommasi, arXiv 1705.07795) treats each coordinate as a gambler
  betting on the sign of the negative gradient: the parameter's offset from its initial value
  is a fraction of the wealth won so far (``L + Reward``), the fraction set by the sum of
  past gradients. There is no learning rate.
- Mechanic (Cutkosky, Defazio & Mehta, arXiv 2306.00144) wraps any optimizer, keeps the sum
  ``Δ`` of its updates, and plays ``x = x_ref + s Δ``, learning the scale ``s`` (the learning
  rate's multiplier) with a few coin-betting learners, one per decay ``β``.

Both compute in at least float32 (see :func:`gradtx.numerics.compute_dtype`) and cast the
update to the parameters' dtype.
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
    _as_member,
    chain,
    check_count,
    check_nonnegative,
    check_range,
    static_field,
    transform,
    user_facing,
)
from gradtx.numerics import tree_map_none as _map
from gradtx.safe_math import _global_norm, _saturate
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = [
    "COCOBState",
    "scale_by_cocob",
    "cocob",
    "MechanicState",
    "mechanize",
]


def _scalar_dtype(params: Any) -> Any:
    """The dtype of Mechanic's per-β scalars: the widest compute dtype of the params' leaves."""
    leaves = [jnp.result_type(x) for x in jax.tree_util.tree_leaves(params)]
    dts = [tree_lib.real_dtype(tree_lib.compute_dtype(d)) for d in leaves]
    return jnp.result_type(*dts) if dts else jnp.result_type(float)


def _real_dot(a: Any, b: Any, dtype: Any) -> jax.Array:
    """``Σ Re⟨a, b⟩`` over the leaves (ℂⁿ taken as ℝ²ⁿ), each leaf in its compute dtype, the
    sum in ``dtype``."""
    total = jnp.zeros([], dtype)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        cd = tree_lib.compute_dtype(jnp.promote_types(jnp.result_type(x), jnp.result_type(y)))
        xc, yc = tree_lib.cast(x, cd), tree_lib.cast(y, cd)
        total = total + jnp.sum(jnp.real(jnp.conj(xc) * yc)).astype(dtype)
    return total


def _unzip(tree: Any, like: Any, n: int) -> tuple:
    """Split a tree of ``n``-tuples (one per leaf of ``like``) into ``n`` trees."""
    treedef = jax.tree_util.tree_structure(like, is_leaf=tree_lib.is_none)
    parts = treedef.flatten_up_to(tree)
    return tuple(treedef.unflatten([p[i] for p in parts]) for i in range(n))


# ----------------------------------------------------------------------------------------------
# COCOB-Backprop.


class COCOBState(NamedTuple):
    """COCOB's per-coordinate state (optax.contrib's layout).

    ``init_particles`` are the initial parameters ``w_1``; ``cumulative_gradients`` is
    ``θ = −Σ g`` (the sum of the negative gradients), ``scale`` the largest ``|g|`` seen
    (``L``, starting at ``eps``), ``subgradients`` the sum ``G = Σ |g|`` and ``reward`` the
    gambler's winnings.
    """

    init_particles: Any
    cumulative_gradients: Any
    scale: Any
    subgradients: Any
    reward: Any


def _refuse_complex(owner: str, params: Any) -> None:
    for p in jax.tree_util.tree_leaves(params):
        if jnp.iscomplexobj(p):
            raise TypeError(
                f"{owner}: complex parameters are not supported (the bets are on the sign of "
                f"each real coordinate), got dtype {jnp.result_type(p)}"
            )


@transform
class scale_by_cocob(GradientTransformation):
    """COCOB-Backprop: each coordinate bets a fraction of its winnings on the gradient's sign.

    With ``g`` the gradient, ``w`` the parameters and ``w_1`` their initial values
    (Algorithm 2 of the paper, with ``−g`` its negative subgradient), for each coordinate:

    .. math::
        L ← \\max(L, |g|),\\quad G ← G + |g|,\\quad
        R ← \\max(R - g\\,(w - w_1), 0),\\quad θ ← θ - g,\\\\
        w^+ = w_1 + \\frac{θ}{L \\max(G + L, α L)} (L + R),\\qquad u = w^+ - w.

    ``L`` starts at ``eps`` (as the authors' code does), ``G``, ``R`` and ``θ`` at 0; ``α``
    caps the fraction bet in the first steps (about ``1/α`` of the wealth). The update does not
    change when every gradient is multiplied by the same positive number (up to ``eps``).
    ``update`` needs the params; complex parameters are refused. The numbers are optax's.

    Args:
        alpha: the cap ``α > 0`` on early bets (the paper's default, 100).
        eps: the initial ``L``, >= 0 (with ``eps = 0`` a coordinate whose gradients have all
            been 0 does not move).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_cocob(alpha=2.0)
        >>> params = jnp.array([1.0])
        >>> u, _ = tx.update(jnp.array([0.5]), tx.init(params), params)
        >>> round(float(u[0]), 4)  # θ/(L max(G + L, αL)) L = −0.5 / max(1, 1) = −0.5
        -0.5

    Reference: Orabona & Tommasi, "Training Deep Networks without Learning Rates Through Coin
    Betting", NeurIPS 2017, arXiv 1705.07795, Algorithm 2 (COCOB-Backprop).
    """

    alpha: Any = 100.0
    eps: Any = 1e-8

    def _check(self):
        check_range("scale_by_cocob", "alpha", self.alpha, low=0.0, low_open=True)
        check_nonnegative("scale_by_cocob", "eps", self.eps)

    def init(self, params):
        _refuse_complex("scale_by_cocob", params)
        return COCOBState(
            init_particles=_map(lambda p: None if p is None else jnp.asarray(p), params),
            cumulative_gradients=tree_lib.tree_zeros_like(params),
            scale=tree_lib.tree_full_like(params, self.eps),
            subgradients=tree_lib.tree_zeros_like(params),
            reward=tree_lib.tree_zeros_like(params),
        )

    def update(self, updates, state, params=None, **extra_args):
        owner = "scale_by_cocob"
        if params is None:
            raise ValueError(f"{owner}: update needs params (call update(grads, state, params))")
        tree_lib.check_structure(updates, state.scale, owner, "updates", "state (scale)")
        alpha, eps = tree_lib.Scalar(self.alpha), tree_lib.Scalar(self.eps)

        def leaf(g, w, w1, theta, big_l, big_g, reward):
            if g is None:
                return None, None, None, None, None
            g = tree_lib.as_array(g)
            cd = tree_lib.compute_dtype(jnp.promote_types(g.dtype, big_l.dtype))
            gc, wc, w1c = (tree_lib.cast(x, cd) for x in (g, w, w1))
            a = jnp.abs(gc)
            # the state's L is at least eps; in float16 eps may have rounded to 0
            lc = jnp.maximum(jnp.maximum(tree_lib.cast(big_l, cd), a), eps(cd))
            gsum = _saturate(tree_lib.cast(big_g, cd) + a)
            rc = _saturate(jnp.maximum(tree_lib.cast(reward, cd) - gc * (wc - w1c), 0))
            tc = tree_lib.cast(theta, cd) - gc
            # θ/(L max(G + L, αL)) (L + R), as (θ / max(G + L, αL)) ((L + R) / L): the product
            # L max(G + L, αL) overflows float32 for |g| above about 1e18
            live = lc > 0
            safe_l = jnp.where(live, lc, 1)
            bet = tc / jnp.maximum(gsum + safe_l, alpha(cd) * safe_l) * ((safe_l + rc) / safe_l)
            u = w1c + jnp.where(live, bet, 0) - wc
            return (
                tree_lib.cast(u, g.dtype),
                tree_lib.cast(tc, theta.dtype),
                tree_lib.cast(lc, big_l.dtype),
                tree_lib.cast(gsum, big_g.dtype),
                tree_lib.cast(rc, reward.dtype),
            )

        out, theta, big_l, big_g, reward = _unzip(
            _map(
                leaf,
                updates,
                params,
                state.init_particles,
                state.cumulative_gradients,
                state.scale,
                state.subgradients,
                state.reward,
            ),
            updates,
            5,
        )
        return out, COCOBState(
            init_particles=state.init_particles,
            cumulative_gradients=theta,
            scale=big_l,
            subgradients=big_g,
            reward=reward,
        )


@user_facing
def cocob(
    learning_rate: ScalarOrSchedule = 1.0,
    alpha: Any = 100.0,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    mask: Any = None,
) -> chain:
    """COCOB: :class:`add_decayed_weights` (an L2 term added to the gradient), the gradient
    multiplied by ``learning_rate`` (no sign flip), then :class:`scale_by_cocob`.

    COCOB needs no learning rate: a constant one changes nothing (up to ``eps``); a schedule
    reweights the gradients over time, as optax's ``learning_rate`` does.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.cocob(alpha=2.0)
        >>> params = {"w": jnp.ones(2)}
        >>> u, state = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
        >>> [float(x) for x in u["w"]]  # −g / max(2|g|, 2|g|) = −sign(g) / 2
        [-0.5, 0.5]

    Reference: Orabona & Tommasi, arXiv 1705.07795 (NeurIPS 2017).
    """
    return chain(
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_cocob(alpha, eps),
    )


# ----------------------------------------------------------------------------------------------
# Mechanic.


class MechanicState(NamedTuple):
    """Mechanic's state: optax.contrib's fields, then ``delta``.

    ``base_optimizer_state`` is the wrapped optimizer's; ``count`` the number of updates;
    ``r``, ``m``, ``v`` and ``s`` hold one entry per ``β`` (the reward, the running maximum of
    ``|h|``, the discounted sum of ``h²`` and the scales whose sum multiplies ``Δ``); ``x0`` is
    the reference point ``x_ref`` (the params at the first update); ``delta`` is ``Δ``, the
    sum of the base optimizer's updates (``None`` with ``variant="optax"``, which recomputes
    it from the params).
    """

    base_optimizer_state: Any
    count: jax.Array
    r: jax.Array
    m: jax.Array
    v: jax.Array
    s: jax.Array
    x0: Any
    delta: Any = None


_MECHANIC_VARIANTS = ("paper", "optax")


@transform
class mechanize(GradientTransformation):
    """Mechanic: learns the scale of any optimizer's steps by coin betting.

    The base optimizer sees the gradients and proposes updates ``u_t``; Mechanic keeps their
    sum ``Δ`` and plays ``x_{t+1} = x_ref + (Σ_i s_{t+1,i}) Δ_{t+1}``. With ``β_i = 1 − 10^{−i}``
    (``i = 1..n``) and ``S_t = Σ_i s_{t,i}`` (Algorithm 1 of the paper; vector operations are
    per ``β``):

    .. math::
        Δ_{t+1} = Δ_t + u_t,\\quad
        h_t = \\Big\\langle Δ_t,\\ g_t + λ S_t \\lVert g_t\\rVert \\frac{x_t}{\\lVert x_t\\rVert}
        \\Big\\rangle,\\\\
        m_t = \\max(β m_{t-1}, |h_t|),\\quad v_t = β^2 v_{t-1} + h_t^2,\\quad
        r_t = \\max(0,\\ β r_{t-1} - s_t h_t),\\\\
        s_{t+1} = \\frac{s_{init}\\, m_t / n + r_t}{\\sqrt{v_t} + ε},\\qquad
        x_{t+1} = x_{ref} + S_{t+1} Δ_{t+1}.

    ``Δ_1 = 0``, ``s_1 = r_0 = m_0 = v_0 = 0`` and ``x_ref`` is ``x_1``, the params at the first
    update: the first update leaves the params where they are, then the scale starts near
    ``s_init`` and grows while the base optimizer's steps keep paying off. ``h_t`` is the
    derivative of the loss's linearisation along ``s``; its weight-decay term (``λ``, not the
    base optimizer's weight decay) is 0 where ``x_t = 0``. For complex parameters the inner
    product is ``Re⟨·,·⟩``. ``update`` needs the params; extra keyword arguments (``value=``)
    go to the base optimizer. ``r``, ``m``, ``v`` and ``s`` are kept in at least float32;
    ``h`` is clipped to ``±√(max)/2`` of their dtype so that ``h²`` stays finite (float32:
    ``|h| <= 9.2e18``).

    ``variant="optax"`` reproduces optax.contrib's numbers (the authors' JAX code), which
    differ from the algorithm box in six ways: ``s`` starts at ``s_init`` per ``β``; ``Δ_t`` is
    recomputed as ``(x_t − x_ref)/(S_t + ε)`` instead of stored; ``m_t = max(β m_{t−1},
    |h_t| + ε)``; the reward uses ``h_t`` clipped to ``[−m_{t−1}, m_{t−1}]``; ``r`` is kept
    unclipped (only the wealth uses ``max(0, r)``); and ``‖x_t‖ + ε`` divides the decay term.
    The box writes ``max(β m, h_t)``; ``m`` bounds the size of ``h`` (with a signed ``h`` the
    scale would stay 0), so this follows the authors' code, ``|h_t|``. The paper's default
    ``s_init`` is 1e-8; the default here is optax's, 1e-6.

    Args:
        base_optimizer: the optimizer whose steps are scaled (gradtx or optax).
        weight_decay: ``λ >= 0``, Mechanic's own decay term in ``h``.
        eps: ``ε >= 0`` in the denominator of ``s``.
        s_init: the initial scale, > 0 (an underestimate is safe).
        num_betas: ``n >= 1``, the number of learners, ``β_i = 1 − 10^{−i}`` (static).
        variant: ``"paper"`` (Algorithm 1) or ``"optax"`` (optax.contrib's numbers).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.mechanize(gradtx.sgd(1.0), weight_decay=0.0)
        >>> x = jnp.array([1.0, -2.0])
        >>> state = opt.init(x)
        >>> for _ in range(3):
        ...     u, state = opt.update(x, state, x)  # the gradient of ‖x‖²/2 is x
        ...     x = x + u
        >>> x.tolist()  # S_4 ≈ 1.8e-6 and Δ_4 = −3 x_ref: x_4 = x_ref (1 − 3 S_4)
        [0.999994..., -1.999989...]

    Reference: Cutkosky, Defazio & Mehta, "Mechanic: A Learning Rate Tuner", NeurIPS 2023,
    arXiv 2306.00144, Algorithm 1.
    """

    base_optimizer: Any
    weight_decay: Any = 1e-2
    eps: Any = 1e-8
    s_init: Any = 1e-6
    num_betas: int = static_field(6)
    variant: str = static_field("paper", kw_only=True)

    # Where the base optimizer's state is (for gradtx.hyperparams' walk).
    _member_states = {"base_optimizer": "base_optimizer_state"}

    def _check(self):
        owner = "mechanize"
        try:
            member = _as_member(self.base_optimizer)
        except TypeError:
            raise TypeError(
                f"{owner}: base_optimizer must be a gradient transformation (gradtx or optax), "
                f"got {self.base_optimizer!r}"
            ) from None
        object.__setattr__(self, "base_optimizer", member)
        check_nonnegative(owner, "weight_decay", self.weight_decay)
        check_nonnegative(owner, "eps", self.eps)
        check_range(owner, "s_init", self.s_init, low=0.0, low_open=True)
        check_count(owner, "num_betas", self.num_betas, low=1)
        object.__setattr__(self, "num_betas", int(self.num_betas))
        if self.variant not in _MECHANIC_VARIANTS:
            raise ValueError(
                f"{owner}: variant must be one of {_MECHANIC_VARIANTS}, got {self.variant!r}"
            )

    def init(self, params):
        dt = _scalar_dtype(params)
        n = self.num_betas
        paper = self.variant == "paper"
        s = jnp.zeros([n], dt) if paper else jnp.full([n], self.s_init, dt)
        return MechanicState(
            base_optimizer_state=self.base_optimizer.init(params),
            count=jnp.zeros([], jnp.int32),
            r=jnp.zeros([n], dt),
            m=jnp.zeros([n], dt),
            v=jnp.zeros([n], dt),
            s=s,
            x0=_map(lambda p: None if p is None else jnp.asarray(p), params),
            delta=tree_lib.tree_zeros_like(params) if paper else None,
        )

    def update(self, updates, state, params=None, **extra_args):
        owner = "mechanize"
        if params is None:
            raise ValueError(f"{owner}: update needs params (call update(grads, state, params))")
        paper = self.variant == "paper"
        dt = state.s.dtype
        first = state.count == 0
        x_ref = _map(lambda p, x0: None if p is None else jnp.where(first, p, x0), params, state.x0)
        base_u, base_state = self.base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra_args
        )
        eps = jnp.asarray(self.eps, dt)
        s_sum = jnp.sum(state.s)

        def to_cd(x):
            return tree_lib.cast(x, tree_lib.compute_dtype(x.dtype))

        if paper:
            delta = state.delta
        else:  # optax: Δ_t recomputed from where the params are

            def recompute(x, x0):
                if x is None:
                    return None
                xc = to_cd(x)
                den = (s_sum + eps).astype(tree_lib.real_dtype(xc.dtype))
                return (xc - tree_lib.cast(x0, xc.dtype)) / den

            delta = _map(recompute, params, x_ref)

        # h_t = ⟨Δ_t, g⟩ + λ S_t ‖g‖ ⟨Δ_t, x⟩ / ‖x‖ (one pass over the leaves per inner product)
        g_norm = _global_norm(updates).astype(dt)
        x_norm = _global_norm(params).astype(dt)
        lam = jnp.asarray(self.weight_decay, dt)
        d_g = _real_dot(delta, updates, dt)
        d_x = _real_dot(delta, params, dt)
        if paper:
            x_norm_pos = x_norm > 0
            decay = jnp.where(x_norm_pos, d_x / jnp.where(x_norm_pos, x_norm, 1), 0)
        else:
            decay = d_x / (x_norm + eps)
        h = d_g + lam * s_sum * g_norm * decay
        # |h| above √(max)/2 would overflow h² (float32: |h| ≈ 9e18); h is clipped there, which
        # leaves the scale s unchanged when every h is that large (s does not depend on h's unit)
        h_max = np.sqrt(np.finfo(dt).max) / 2
        h = jnp.clip(h, -h_max, h_max)

        n = self.num_betas
        betas = jnp.asarray(np.array([1 - 0.1**i for i in range(1, n + 1)]), dt)
        s_init = jnp.asarray(self.s_init, dt)
        if paper:
            m = jnp.maximum(betas * state.m, jnp.abs(h))
            r = jnp.maximum(betas * state.r - state.s * h, 0)
            wealth_r = r
        else:
            m = jnp.maximum(betas * state.m, jnp.abs(h) + eps)
            r = betas * state.r - state.s * jnp.clip(h, -state.m, state.m)
            wealth_r = jnp.maximum(r, 0)
        v = _saturate(betas**2 * state.v + h * h)
        den = jnp.sqrt(v) + eps
        # 0/0 only with eps = 0 before any h ≠ 0 (the wealth is then 0 too): no scale yet
        s = jnp.where(den > 0, (s_init / n * m + wealth_r) / jnp.where(den > 0, den, 1), 0)
        s_next = jnp.sum(s)

        def step(g, x, x0, d, u):
            # x_{t+1} − x_t with x_{t+1} = x_ref + S_{t+1} (Δ_t + u_t)
            if g is None:
                return None, None
            xc = to_cd(x)
            cd = xc.dtype
            d_next = tree_lib.cast(d, cd) + tree_lib.cast(u, cd)
            new_x = tree_lib.cast(x0, cd) + s_next.astype(tree_lib.real_dtype(cd)) * d_next
            out = tree_lib.cast(new_x - xc, tree_lib.as_array(g).dtype)
            return out, (tree_lib.cast(d_next, d.dtype) if paper else None)

        out, new_delta = _unzip(_map(step, updates, params, x_ref, delta, base_u), updates, 2)
        return out, MechanicState(
            base_optimizer_state=base_state,
            count=tree_lib.safe_increment(state.count),
            r=r,
            m=m,
            v=v,
            s=s,
            x0=x_ref,
            delta=new_delta if paper else None,
        )
