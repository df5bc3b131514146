"""L-BFGS: the limited-memory quasi-Newton direction (two-loop recursion) as a transform.

:class:`scale_by_lbfgs` turns a gradient into ``H_k g_k``, where ``H_k`` is the inverse-Hessian
approximation built from the last ``m`` curvature pairs. It keeps the pairs in stacked buffers
(leading axis ``m``) used as a ring, so the state has a fixed shape and a jitted loop never
recompiles. Chain it with ``scale(-1)`` and a line search (see :func:`gradtx.lbfgs`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import GradientTransformation, static_field, transform

__all__ = ["scale_by_lbfgs", "ScaleByLbfgsState", "ScaleByLBFGSState"]

_none = lambda x: x is None  # noqa: E731


def _map(f, *trees):
    return jax.tree_util.tree_map(f, *trees, is_leaf=_none)


def _real_vdot(a: Any, b: Any) -> jax.Array:
    return jnp.real(tree_lib.tree_vdot(a, b))


class ScaleByLbfgsState(NamedTuple):
    """State of :class:`scale_by_lbfgs`.

    Attributes:
        count: number of calls so far.
        params: the parameters seen at the last call (to form ``s = θ_k − θ_{k−1}``).
        updates: the gradient seen at the last call (to form ``y = g_k − g_{k−1}``).
        diff_params_memory: stacked ``s_i`` (leading axis ``memory_size``), used as a ring.
        diff_updates_memory: stacked ``y_i``, same layout.
        weights_memory: ``ρ_i = 1 / <s_i, y_i>``; 0 in an empty slot (which then does nothing).
        num_pairs: number of pairs written so far (minus a multiple of ``m`` once it reaches
            ``2m``, so it never overflows); the next one goes to ``num_pairs % m``.
        identity_scale: ``γ = <s, y>/<y, y>`` of the newest pair (1 before any).
    """

    count: jax.Array
    params: Any
    updates: Any
    diff_params_memory: Any
    diff_updates_memory: Any
    weights_memory: jax.Array
    num_pairs: jax.Array
    identity_scale: jax.Array


ScaleByLBFGSState = ScaleByLbfgsState  # optax's spelling of the same state


def _store_pair(
    state: ScaleByLbfgsState,
    s: Any,
    y: Any,
    accept: jax.Array,
    sy: jax.Array | None = None,
    *,
    rho: jax.Array | None = None,
) -> tuple:
    """Write ``(s, y, ρ)`` into the next ring slot when ``accept``; returns the buffers.

    ``ρ = 1/<s, y>`` unless given. Returns ``(diff_params_memory, diff_updates_memory,
    weights_memory, num_pairs)``.
    """
    m = state.weights_memory.shape[0]
    idx = state.num_pairs % m
    if rho is None:
        sy = _real_vdot(s, y) if sy is None else sy
        rho = jnp.where(accept, 1.0 / jnp.where(accept, sy, 1.0), 0.0)

    def put(buf, v):
        if buf is None:
            return None
        return buf.at[idx].set(jnp.where(accept, v.astype(buf.dtype), buf[idx]))

    s_mem = _map(put, state.diff_params_memory, s)
    y_mem = _map(put, state.diff_updates_memory, y)
    w_mem = state.weights_memory.at[idx].set(
        jnp.where(accept, rho, state.weights_memory[idx]).astype(state.weights_memory.dtype)
    )
    # The pair count only needs to say "how many, up to m" and where the newest pair is
    # ((n − 1) mod m): once it reaches 2m it steps back by m, so it never wraps.
    n = state.num_pairs + accept.astype(state.num_pairs.dtype)
    return s_mem, y_mem, w_mem, jnp.where(n >= 2 * m, n - m, n)


def _identity_scale(
    grad: Any, y_mem: Any, w_mem: jax.Array, num_pairs: jax.Array, scale_init: bool
) -> jax.Array:
    """``γ_k`` of the initial matrix ``γ_k I``: ``<s, y>/<y, y>`` of the newest pair, or
    ``min(1, 1/||g||)`` before any pair exists (so the first step has length at most 1)."""
    if not scale_init:
        return jnp.ones((), w_mem.dtype)
    m = w_mem.shape[0]
    last = (num_pairs - 1) % m
    y_last = _map(lambda b: None if b is None else b[last], y_mem)
    yy = tree_lib.tree_l2_norm(y_last, squared=True)
    rho = w_mem[last]
    gamma = jnp.where((rho > 0) & (yy > 0), 1.0 / jnp.where(rho * yy > 0, rho * yy, 1.0), 1.0)
    gnorm = tree_lib.tree_l2_norm(jax.lax.stop_gradient(grad))
    first = jnp.minimum(1.0, 1.0 / gnorm)
    return jnp.where(num_pairs > 0, gamma, first).astype(w_mem.dtype)


def _two_loop(
    grad: Any, s_mem: Any, y_mem: Any, w_mem: jax.Array, num_pairs: jax.Array, gamma: jax.Array
) -> Any:
    """``H g`` by the two-loop recursion (Nocedal & Wright, Algorithm 7.4) over the ring.

    Empty slots have ``ρ = 0`` and zero vectors, so they leave the vector unchanged.
    """
    m = w_mem.shape[0]
    order = (num_pairs + jnp.arange(m)) % m  # oldest ... newest

    def take(buf, i):
        return _map(lambda b: None if b is None else b[i], buf)

    def backward(q, i):  # newest to oldest: α_i = ρ_i <s_i, q>, q ← q − α_i y_i
        alpha = w_mem[i] * _real_vdot(take(s_mem, i), q)
        q = _map(
            lambda x, y: None if x is None else (x - alpha * y).astype(x.dtype), q, take(y_mem, i)
        )
        return q, alpha

    q, alphas = jax.lax.scan(backward, grad, order, reverse=True)
    r = tree_lib.tree_scale(gamma, q)

    def forward(r, i_alpha):  # oldest to newest: β = ρ_i <y_i, r>, r ← r + (α_i − β) s_i
        i, alpha = i_alpha
        beta = w_mem[i] * _real_vdot(take(y_mem, i), r)
        r = _map(
            lambda x, s: None if x is None else (x + (alpha - beta) * s).astype(x.dtype),
            r,
            take(s_mem, i),
        )
        return r, None

    r, _ = jax.lax.scan(forward, r, (order, alphas))
    return r


def _curvature_ok(s: Any, y: Any, sy: Any = None, yy: Any = None) -> jax.Array:
    """Whether a pair keeps ``H`` positive definite: ``<s, y> > ε_mach · <y, y>`` (L-BFGS-B's
    test), with everything finite."""
    sy = _real_vdot(s, y) if sy is None else sy
    yy = tree_lib.tree_l2_norm(y, squared=True) if yy is None else yy
    leaves = jax.tree_util.tree_leaves(s)
    eps = jnp.finfo(tree_lib.real_dtype(leaves[0].dtype)).eps if leaves else 1e-7
    return (sy > eps * yy) & jnp.isfinite(sy) & jnp.isfinite(yy)


@transform
class scale_by_lbfgs(GradientTransformation):
    """The L-BFGS direction ``H_k g_k`` (Nocedal & Wright, Algorithms 7.4 and 7.5).

    At each call with gradient ``g_k`` at parameters ``θ_k`` the pair of the step just taken,
    ``s = θ_k − θ_{k−1}``, ``y = g_k − g_{k−1}``, enters the memory (the oldest of ``m`` pairs
    leaves), whatever the sign of ``<s, y>``, as in optax: a step whose ``<s, y> = 0`` (a line
    search that took no step) occupies its slot with ``ρ = 0`` and changes nothing. The
    direction is computed by the two-loop recursion (Nocedal & Wright, 2nd ed., Algorithm 7.4)
    over the stored pairs ``(s_i, y_i)``, newest ``i = k−1``, oldest ``i = k−m``, with
    ``ρ_i = 1/<s_i, y_i>``:

    .. code-block:: text

        q ← g_k
        for i = k−1, …, k−m:   α_i ← ρ_i <s_i, q>;   q ← q − α_i y_i
        r ← γ_k q                                  (H_k⁰ = γ_k I)
        for i = k−m, …, k−1:   β ← ρ_i <y_i, r>;     r ← r + (α_i − β) s_i
        return r = H_k g_k

    with ``γ_k = <s_{k−1}, y_{k−1}> / <y_{k−1}, y_{k−1}>`` (eq. 7.20, the newest pair; 1 when
    ``y_{k−1} = 0``). This equals ``H_k g_k`` for ``H_k`` built by
    ``H ← V_iᵀ H V_i + ρ_i s_i s_iᵀ``, ``V_i = I − ρ_i y_i s_iᵀ``, applied from ``H = γ_k I``
    for ``i = k−m, …, k−1`` (eq. 7.19). Before any pair exists ``H_0 = γ_0 I`` with
    ``γ_0 = min(1, 1/||g_0||)``. With ``scale_init_precond=False``, ``γ_k = 1``. The output is
    ``H_k g_k`` (a descent direction once negated while every stored ``<s_i, y_i> > 0``); chain
    it with ``scale(-1)`` and a line search.

    ``H_k`` is positive definite only while the stored pairs have ``<s_i, y_i> > 0``, which a
    line search enforcing the (strong) Wolfe conditions guarantees: that is why :func:`lbfgs`
    uses one by default. Without a line search (``lbfgs(linesearch=None)``) on a non-convex
    objective a pair of negative curvature is kept, as optax keeps it (the iterates are
    optax's), and the direction may then point uphill. A pair whose ``<s, y>`` is not finite is
    stored as zeros.

    Args:
        memory_size: number of pairs ``m`` kept (static: it sets the buffers' shape).
        scale_init_precond: use ``γ_k`` above for the initial matrix (else the identity).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_lbfgs(memory_size=3)
        >>> state = tx.init(jnp.zeros(2))
        >>> d, state = tx.update(jnp.array([3.0, 4.0]), state, jnp.zeros(2))
        >>> [round(float(x), 4) for x in d]  # first call: g / ||g||
        [0.6, 0.8]

    Reference: Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, section 7.2,
    Algorithm 7.4; Liu & Nocedal, "On the limited memory BFGS method for large scale
    optimization", Mathematical Programming 45, 1989.
    """

    memory_size: int = static_field(10)
    scale_init_precond: bool = static_field(True)

    def _check(self):
        m = self.memory_size
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"scale_by_lbfgs: memory_size must be an int >= 1, got {m!r}")

    def init(self, params):
        m = self.memory_size
        leaves = jax.tree_util.tree_leaves(params)
        wdt = tree_lib.real_dtype(jnp.result_type(leaves[0])) if leaves else jnp.float32
        stacked = _map(
            lambda p: None if p is None else jnp.zeros((m,) + jnp.shape(p), jnp.result_type(p)),
            params,
        )
        return ScaleByLbfgsState(
            count=jnp.zeros([], jnp.int32),
            params=tree_lib.tree_zeros_like(params),
            updates=tree_lib.tree_zeros_like(params),
            diff_params_memory=stacked,
            diff_updates_memory=stacked,
            weights_memory=jnp.zeros((m,), wdt),
            num_pairs=jnp.zeros([], jnp.int32),
            identity_scale=jnp.ones([], wdt),
        )

    def update(self, updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("scale_by_lbfgs: update needs params (the current parameters)")
        tree_lib.check_structure(updates, state.params, "scale_by_lbfgs", "updates", "state")
        s = tree_lib.tree_sub(params, state.params)
        y = tree_lib.tree_sub(updates, state.updates)
        sy = _real_vdot(s, y)
        yy = tree_lib.tree_l2_norm(y, squared=True)
        # Every call after the first writes the pair of the step just taken (optax's rule); a
        # pair with <s, y> = 0 or not finite is written as zeros with ρ = 0 (a no-op slot).
        written = state.count > 0
        usable = jnp.isfinite(sy) & (sy != 0)
        s = _map(lambda v: None if v is None else jnp.where(usable, v, jnp.zeros_like(v)), s)
        y = _map(lambda v: None if v is None else jnp.where(usable, v, jnp.zeros_like(v)), y)
        rho = jnp.where(usable, 1.0 / jnp.where(usable, sy, 1.0), 0.0)
        s_mem, y_mem, w_mem, num_pairs = _store_pair(state, s, y, written, rho=rho)
        wdt = state.identity_scale.dtype
        newest = jnp.where(yy > 0, sy / jnp.where(yy > 0, yy, 1.0), 1.0)
        newest = jnp.where(written, newest, state.identity_scale).astype(wdt)
        if self.scale_init_precond:
            first = jnp.minimum(1.0, 1.0 / tree_lib.tree_l2_norm(jax.lax.stop_gradient(updates)))
            gamma = jnp.where(written, newest, first).astype(wdt)
        else:
            gamma = jnp.ones([], wdt)
        direction = _two_loop(updates, s_mem, y_mem, w_mem, num_pairs, gamma)
        direction = tree_lib.tree_cast_like(direction, updates)
        new_state = ScaleByLbfgsState(
            count=tree_lib.safe_increment(state.count),
            params=tree_lib.tree_cast_like(params, state.params),
            updates=tree_lib.tree_cast_like(updates, state.updates),
            diff_params_memory=s_mem,
            diff_updates_memory=y_mem,
            weights_memory=w_mem,
            num_pairs=num_pairs,
            identity_scale=newest,
        )
        return direction, new_state
